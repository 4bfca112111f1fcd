// `resnet-exp download`: fetch the CIFAR-10 binary archive, check its md5, unpack it.
//
// Everything is written next to dataDir (same file system, so the final rename is
// atomic): the archive to a hidden temp file, the extraction to a hidden temp
// directory, and only a fully verified cifar-10-batches-bin/ is renamed to dataDir.
// An interrupted or failed download therefore never leaves a half-written dataDir.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ReadableStreamReadResult } from 'node:stream/web';
import { SingleBar } from 'cli-progress';
import * as tar from 'tar';
import { DataError, RECORDS_PER_FILE, TEST_FILE, TRAIN_FILES, findCifar10Problem } from './cifar10';

export const CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz';
export const CIFAR10_MD5 = 'c32a1d4ab5d03f1284b67883e8d87530';
/** The archive's top folder; its contents become dataDir. */
const ARCHIVE_TOP = 'cifar-10-batches-bin';

/** No response headers within this time counts as a network failure. */
const CONNECT_TIMEOUT_MS = 30_000;
/** No new bytes within this time (a stalled transfer) counts as a network failure. */
const IDLE_TIMEOUT_MS = 60_000;

export interface DownloadOptions {
  url?: string;
  /** Show progress (a bar on a TTY, a few lines otherwise). Default true. */
  progress?: boolean;
  fetchImpl?: typeof fetch;
  /** Expected md5 of the archive; default CIFAR10_MD5 (tests serve their own archive). */
  md5?: string;
  /** Records per batch file for the size checks; default 10000 (tests use small files). */
  recordsPerFile?: number;
  /** Where status lines go; default stderr. */
  log?: (line: string) => void;
}

/** The one-line error for any failure to get the bytes. */
function networkError(url: string, reason: string, dataDir: string): DataError {
  const files = `${TRAIN_FILES[0]} ... ${TEST_FILE}`;
  return new DataError(
    `could not download ${url} (${oneLine(reason)}); put the CIFAR-10 binary files (${files}) ` +
      `in ${dataDir} by hand, or pass --data-dir`,
  );
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

/** The useful part of a fetch failure: undici throws TypeError('fetch failed') with the real cause. */
function reasonOf(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    if (cause instanceof Error && cause.message !== '') return cause.message;
    if (typeof cause === 'string' && cause !== '') return cause;
    return err.message;
  }
  return String(err);
}

const MB = 1024 * 1024;

/** Progress display: a cli-progress bar on a TTY, else a line at each quarter (or every 32 MB). */
function makeProgress(enabled: boolean, total: number, log: (line: string) => void) {
  if (!enabled) return { update: (_bytes: number) => {}, stop: () => {} };
  if (process.stderr.isTTY && total > 0) {
    const bar = new SingleBar({
      stream: process.stderr,
      format: 'CIFAR-10 |{bar}| {percentage}% {done}/{size} MB {speed} MB/s',
      hideCursor: true,
    });
    const t0 = Date.now();
    const payload = (bytes: number) => ({
      done: (bytes / MB).toFixed(1),
      size: (total / MB).toFixed(1),
      speed: (bytes / MB / Math.max((Date.now() - t0) / 1000, 1e-3)).toFixed(1),
    });
    bar.start(total, 0, payload(0));
    return { update: (bytes: number) => bar.update(bytes, payload(bytes)), stop: () => bar.stop() };
  }
  let next = total > 0 ? total / 4 : 32 * MB;
  return {
    update: (bytes: number) => {
      if (bytes < next) return;
      log(total > 0 ? `  ${Math.floor((100 * bytes) / total)}% (${(bytes / MB).toFixed(1)} MB)` : `  ${(bytes / MB).toFixed(1)} MB`);
      while (next <= bytes) next += total > 0 ? total / 4 : 32 * MB;
    },
    stop: () => {},
  };
}

/** Streams url to file, returning the md5 of what was received. */
async function fetchToFile(
  url: string,
  file: string,
  fetchImpl: typeof fetch,
  dataDir: string,
  progress: boolean,
  log: (line: string) => void,
): Promise<string> {
  const ctrl = new AbortController();
  let timer = setTimeout(() => ctrl.abort(new Error(`no response within ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
  try {
    let res: Response;
    try {
      res = await fetchImpl(url, { signal: ctrl.signal, redirect: 'follow' });
    } catch (err) {
      throw networkError(url, reasonOf(err), dataDir);
    }
    if (!res.ok || res.body === null) {
      throw networkError(url, `HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}`, dataDir);
    }
    const total = Number(res.headers.get('content-length') ?? 0) || 0;
    const md5 = createHash('md5');
    const bar = makeProgress(progress, total, log);
    const reader = res.body.getReader();
    const out = await fs.promises.open(file, 'w');
    let received = 0;
    try {
      for (;;) {
        clearTimeout(timer);
        timer = setTimeout(() => ctrl.abort(new Error(`transfer stalled for ${IDLE_TIMEOUT_MS / 1000} s`)), IDLE_TIMEOUT_MS);
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          throw networkError(url, `${reasonOf(err)} after ${received} bytes`, dataDir);
        }
        if (chunk.done) break;
        md5.update(chunk.value);
        try {
          await out.write(chunk.value);
        } catch (err) {
          throw new DataError(`could not write ${file}: ${oneLine(reasonOf(err))}`);
        }
        received += chunk.value.length;
        bar.update(received);
      }
    } finally {
      bar.stop();
      await out.close();
    }
    if (total > 0 && received !== total) {
      throw networkError(url, `connection closed after ${received} of ${total} bytes`, dataDir);
    }
    return md5.digest('hex');
  } finally {
    clearTimeout(timer);
  }
}

/** rmdir dir and its ancestors up to and including top, stopping at the first non-empty one. */
function removeEmptyDirs(dir: string, top: string): void {
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      fs.rmdirSync(d);
    } catch {
      return;
    }
    if (d === top || path.dirname(d) === d) return;
  }
}

/**
 * Makes dataDir hold the CIFAR-10 binary batch files, downloading them if needed.
 * Throws DataError (one line) on any failure.
 */
export async function downloadCifar10(dataDir: string, opts: DownloadOptions = {}): Promise<void> {
  const url = opts.url ?? CIFAR10_URL;
  const expectedMd5 = (opts.md5 ?? CIFAR10_MD5).toLowerCase();
  const recordsPerFile = opts.recordsPerFile ?? RECORDS_PER_FILE;
  const log = opts.log ?? ((line: string) => void process.stderr.write(line + '\n'));
  const fetchImpl = opts.fetchImpl ?? fetch;
  const target = path.resolve(dataDir);

  if (fs.existsSync(target)) {
    const problem = findCifar10Problem(target, recordsPerFile);
    if (problem === undefined) {
      log(`CIFAR-10 is already in ${target} (all six batch files present with the right sizes); nothing to do`);
      return;
    }
    // Never overwrite or delete something the user put there; an empty dir is fine to replace.
    if (!fs.statSync(target).isDirectory() || fs.readdirSync(target).length > 0) {
      throw new DataError(
        `${target} exists but is not a complete CIFAR-10 directory (${problem}); remove it or pass another --data-dir, then download again`,
      );
    }
  }

  const parent = path.dirname(target);
  // The first directory this creates (if any), so a failed download can take it away again.
  const createdParent = fs.mkdirSync(parent, { recursive: true });
  const tmpBase = path.join(parent, `.${path.basename(target)}.download-${process.pid}-${Date.now()}`);
  const archive = `${tmpBase}.tar.gz`;
  const extractDir = `${tmpBase}.d`;
  let done = false;
  try {
    log(`downloading ${url}`);
    const md5 = await fetchToFile(url, archive, fetchImpl, target, opts.progress ?? true, log);
    if (md5 !== expectedMd5) {
      throw new DataError(
        `md5 of the archive downloaded from ${url} is ${md5}, expected ${expectedMd5}; the download is corrupt ` +
          `or the file changed: try again, or put the CIFAR-10 binary files in ${target} by hand`,
      );
    }
    log(`md5 ok (${md5}); extracting`);
    fs.mkdirSync(extractDir);
    try {
      await tar.x({ file: archive, cwd: extractDir });
    } catch (err) {
      throw new DataError(`could not extract the archive from ${url}: ${oneLine(reasonOf(err))}`);
    }
    const extracted = path.join(extractDir, ARCHIVE_TOP);
    const problem = findCifar10Problem(extracted, recordsPerFile);
    if (problem !== undefined) {
      throw new DataError(
        `the archive from ${url} does not hold a valid ${ARCHIVE_TOP}/ (${problem.replace(extractDir + path.sep, '')})`,
      );
    }
    if (fs.existsSync(target)) fs.rmdirSync(target); // known empty (checked above)
    try {
      fs.renameSync(extracted, target);
    } catch (err) {
      throw new DataError(`could not move the extracted files to ${target}: ${oneLine(reasonOf(err))}`);
    }
    log(`CIFAR-10 is ready in ${target}`);
    done = true;
  } finally {
    fs.rmSync(archive, { force: true });
    fs.rmSync(extractDir, { recursive: true, force: true });
    if (!done && createdParent !== undefined) removeEmptyDirs(parent, createdParent);
  }
}
