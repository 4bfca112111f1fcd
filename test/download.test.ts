// Tests of src/data/download.ts against a local HTTP server on 127.0.0.1 serving a
// small synthetic archive built here. Never touches the internet.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tar from 'tar';
import { DataError, TEST_FILE, TRAIN_FILES, loadCifar10 } from '../src/data/cifar10';
import { CIFAR10_MD5, downloadCifar10 } from '../src/data/download';

const REC = 3073;
const PER_FILE = 4;

let root: string; // scratch space for this file's tests
let good: Buffer; // a valid .tar.gz with cifar-10-batches-bin/ at the top
let goodMd5: string;
let noTop: Buffer; // a .tar.gz whose files are not inside cifar-10-batches-bin/
let server: http.Server;
let base: string; // http://127.0.0.1:<port>
const hits: string[] = [];

function batchFile(first: number): Buffer {
  const buf = Buffer.alloc(PER_FILE * REC);
  for (let r = 0; r < PER_FILE; r++) {
    buf[r * REC] = (first + r) % 10;
    buf.fill((first + r) * 11, r * REC + 1, (r + 1) * REC);
  }
  return buf;
}

async function makeArchive(dir: string, top: string | null): Promise<Buffer> {
  const src = path.join(root, `src-${top ?? 'flat'}`);
  const files = path.join(src, top ?? '');
  fs.mkdirSync(files, { recursive: true });
  TRAIN_FILES.forEach((name, i) => fs.writeFileSync(path.join(files, name), batchFile(i * PER_FILE)));
  fs.writeFileSync(path.join(files, TEST_FILE), batchFile(100));
  fs.writeFileSync(path.join(files, 'batches.meta.txt'), 'airplane\nautomobile\n');
  const out = path.join(dir, `${top ?? 'flat'}.tar.gz`);
  await tar.c({ gzip: true, file: out, cwd: src }, top ? [top] : fs.readdirSync(src));
  return fs.readFileSync(out);
}

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'cifar-dl-test-'));
  good = await makeArchive(root, 'cifar-10-batches-bin');
  goodMd5 = createHash('md5').update(good).digest('hex');
  noTop = await makeArchive(root, null);
  server = http.createServer((req, res) => {
    hits.push(req.url ?? '');
    if (req.url === '/cifar.tar.gz' || req.url === '/flat.tar.gz') {
      const body = req.url === '/cifar.tar.gz' ? good : noTop;
      res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': body.length });
      res.end(body);
    } else if (req.url === '/cut.tar.gz') {
      // Promise the whole archive, send half, then drop the connection.
      res.writeHead(200, { 'content-length': good.length });
      res.write(good.subarray(0, good.length >> 1), () => res.destroy());
    } else {
      res.writeHead(404, 'Not Found');
      res.end('no such file');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  fs.rmSync(root, { recursive: true, force: true });
});

/** A fresh parent directory; dataDir is parent/cifar-10-batches-bin (not yet existing). */
function fresh(): { parent: string; dataDir: string } {
  const parent = fs.mkdtempSync(path.join(root, 'parent-'));
  return { parent, dataDir: path.join(parent, 'cifar-10-batches-bin') };
}

async function dataErrorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof DataError, `expected a DataError, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), `message is not one line: ${JSON.stringify(err.message)}`);
    return err.message;
  }
  assert.fail('expected a DataError, the download succeeded');
}

/** After a failure: no dataDir and no temp files left next to it. */
function assertNothingLeft(parent: string): void {
  assert.deepEqual(fs.readdirSync(parent), [], 'parent directory is left as it was');
}

const quiet = { progress: false, log: () => {} };

test('an md5 mismatch is an error naming expected and actual md5, and leaves nothing behind', async () => {
  const { parent, dataDir } = fresh();
  const msg = await dataErrorOf(
    downloadCifar10(dataDir, { ...quiet, url: `${base}/cifar.tar.gz`, recordsPerFile: PER_FILE }),
  );
  assert.ok(msg.includes(CIFAR10_MD5), msg);
  assert.ok(msg.includes(goodMd5), msg);
  assert.match(msg, /expected/);
  assertNothingLeft(parent);
});

test('a good archive is downloaded, checked, extracted to dataDir, and the temp files removed', async () => {
  const { parent, dataDir } = fresh();
  const lines: string[] = [];
  const opts = {
    url: `${base}/cifar.tar.gz`,
    md5: goodMd5,
    recordsPerFile: PER_FILE,
    progress: true, // stderr is not a TTY under the test runner: plain lines
    log: (l: string) => lines.push(l),
  };
  await downloadCifar10(dataDir, opts);
  assert.deepEqual(fs.readdirSync(parent), ['cifar-10-batches-bin'], 'only dataDir, no temp archive or extract dir');
  assert.deepEqual(fs.readdirSync(dataDir).sort(), [...TRAIN_FILES, TEST_FILE, 'batches.meta.txt'].sort());
  const { train, test: testSplit } = loadCifar10(dataDir, { recordsPerFile: PER_FILE });
  assert.equal(train.count, 5 * PER_FILE);
  assert.equal(train.labels[5], 5);
  assert.equal(train.images[7 * 3072 + 100], (7 * 11) % 256);
  assert.equal(testSplit.labels[0], 0);
  assert.ok(
    lines.some((l) => /ready/.test(l)),
    lines.join('\n'),
  );

  // A second call finds the files and does not download again.
  const before = hits.length;
  lines.length = 0;
  await downloadCifar10(dataDir, opts);
  assert.equal(hits.length, before, 'no request made');
  assert.ok(
    lines.some((l) => /already/.test(l)),
    lines.join('\n'),
  );
});

test('an empty existing dataDir is filled; a non-empty invalid one is refused and left untouched', async () => {
  const a = fresh();
  fs.mkdirSync(a.dataDir);
  await downloadCifar10(a.dataDir, {
    ...quiet,
    url: `${base}/cifar.tar.gz`,
    md5: goodMd5,
    recordsPerFile: PER_FILE,
  });
  assert.equal(fs.readdirSync(a.dataDir).length, 7);

  const b = fresh();
  fs.mkdirSync(b.dataDir);
  fs.writeFileSync(path.join(b.dataDir, 'data_batch_1.bin'), 'partial');
  const msg = await dataErrorOf(
    downloadCifar10(b.dataDir, {
      ...quiet,
      url: `${base}/cifar.tar.gz`,
      md5: goodMd5,
      recordsPerFile: PER_FILE,
    }),
  );
  assert.ok(msg.includes(b.dataDir), msg);
  assert.match(msg, /not a complete CIFAR-10 directory/);
  assert.deepEqual(fs.readdirSync(b.dataDir), ['data_batch_1.bin']);
  assert.equal(fs.readFileSync(path.join(b.dataDir, 'data_batch_1.bin'), 'utf8'), 'partial');
});

test('an unreachable URL gives the one-line error saying where to put the files', async () => {
  // A port that was just free: listen, note it, close.
  const probe = http.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const url = `http://127.0.0.1:${port}/x`;
  const { parent, dataDir } = fresh();
  const msg = await dataErrorOf(downloadCifar10(dataDir, { ...quiet, url }));
  assert.ok(msg.startsWith(`could not download ${url} (`), msg);
  assert.match(msg, /ECONNREFUSED/);
  assert.ok(
    msg.includes(`put the CIFAR-10 binary files (data_batch_1.bin ... test_batch.bin) in ${dataDir} by hand`),
    msg,
  );
  assert.match(msg, /--data-dir$/);
  assertNothingLeft(parent);
  // Parent directories the downloader had to create are taken away again on failure.
  const deep = path.join(parent, 'a', 'b', 'cifar-10-batches-bin');
  await dataErrorOf(downloadCifar10(deep, { ...quiet, url }));
  assertNothingLeft(parent);
});

test('HTTP errors and a connection dropped mid-transfer are network errors too', async () => {
  const a = fresh();
  const msg = await dataErrorOf(downloadCifar10(a.dataDir, { ...quiet, url: `${base}/missing.tar.gz` }));
  assert.match(msg, /^could not download .*missing\.tar\.gz \(HTTP 404 Not Found\); put the CIFAR-10/);
  assertNothingLeft(a.parent);

  const b = fresh();
  const msg2 = await dataErrorOf(downloadCifar10(b.dataDir, { ...quiet, url: `${base}/cut.tar.gz`, md5: goodMd5 }));
  assert.match(msg2, /^could not download .*cut\.tar\.gz \(.+\); put the CIFAR-10 binary files/);
  assertNothingLeft(b.parent);
});

test('an archive without cifar-10-batches-bin/ at the top is rejected without creating dataDir', async () => {
  const { parent, dataDir } = fresh();
  const md5 = createHash('md5').update(noTop).digest('hex');
  const msg = await dataErrorOf(
    downloadCifar10(dataDir, {
      ...quiet,
      url: `${base}/flat.tar.gz`,
      md5,
      recordsPerFile: PER_FILE,
    }),
  );
  assert.match(msg, /does not hold a valid cifar-10-batches-bin\//);
  assertNothingLeft(parent);
});

test('a fetch that throws (e.g. DNS failure) is reported with its cause', async () => {
  const { parent, dataDir } = fresh();
  const failing: typeof fetch = async () => {
    throw new TypeError('fetch failed', {
      cause: new Error('getaddrinfo ENOTFOUND www.cs.toronto.edu'),
    });
  };
  const msg = await dataErrorOf(downloadCifar10(dataDir, { ...quiet, fetchImpl: failing }));
  assert.ok(
    msg.startsWith('could not download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (getaddrinfo ENOTFOUND'),
    msg,
  );
  assertNothingLeft(parent);
});
