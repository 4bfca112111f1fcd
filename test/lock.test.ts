// run.lock (src/experiment/lock.ts): one writer per run folder, on one host or several
// sharing a file system.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { acquireLock, LockError, processStart, readLock, type LockInfo } from '../src/experiment/lock';
import { ROOT, tempDir } from './helpers';

const linux = fs.existsSync('/proc/self/stat');

function writeLock(dir: string, info: Partial<LockInfo>): void {
  const full: LockInfo = { host: os.hostname(), pid: 1, start: null, heartbeat: Date.now(), token: 'other', ...info };
  fs.writeFileSync(path.join(dir, 'run.lock'), JSON.stringify(full));
}

describe('run lock', () => {
  it('keeps a second holder out, names run.lock, its host and pid, and is released', async () => {
    const dir = tempDir();
    const lock = await acquireLock(dir);
    const held = readLock(path.join(dir, 'run.lock'));
    assert.equal(held?.pid, process.pid);
    assert.equal(held?.host, os.hostname());
    await assert.rejects(acquireLock(dir), (e: Error) => {
      assert.ok(e instanceof LockError);
      assert.match(e.message, /run\.lock/);
      assert.match(e.message, new RegExp(`pid ${process.pid}`));
      assert.ok(e.message.includes(os.hostname()));
      return true;
    });
    lock.release();
    assert.equal(fs.existsSync(path.join(dir, 'run.lock')), false);
    (await acquireLock(dir)).release();
  });

  it('a dead pid is stale; so is an old-style bare-pid lock of a dead process', async () => {
    const dir = tempDir();
    writeLock(dir, { pid: 99999999 });
    (await acquireLock(dir)).release();
    fs.writeFileSync(path.join(dir, 'run.lock'), '99999999\n');
    (await acquireLock(dir)).release();
  });

  it(
    'a reused pid (a live unrelated process with another start time) is stale',
    { skip: !linux && 'needs /proc' },
    async () => {
      const dir = tempDir();
      const child = spawn('sleep', ['30']);
      try {
        await new Promise((r) => child.once('spawn', r));
        const pid = child.pid!;
        const start = processStart(pid);
        assert.ok(start !== null);
        writeLock(dir, { pid, start: start });
        await assert.rejects(acquireLock(dir), LockError, 'same pid and start time: held');
        writeLock(dir, { pid, start: String(Number(start) - 1) });
        const lock = await acquireLock(dir);
        assert.equal(readLock(path.join(dir, 'run.lock'))?.pid, process.pid);
        lock.release();
        // An old-style lock (bare pid) written before the process started: reused as well.
        fs.writeFileSync(path.join(dir, 'run.lock'), `${pid}\n`);
        const past = new Date(Date.now() - 3600_000);
        fs.utimesSync(path.join(dir, 'run.lock'), past, past);
        (await acquireLock(dir)).release();
      } finally {
        child.kill();
      }
    },
  );

  it('another host: held while its heartbeat is fresh, stale after RESNET_EXP_LOCK_STALE_S', async () => {
    const dir = tempDir();
    writeLock(dir, { host: 'node-elsewhere', pid: 4242, heartbeat: Date.now() - 5_000 });
    await assert.rejects(acquireLock(dir), /run\.lock is held by pid 4242 on host node-elsewhere/);
    writeLock(dir, { host: 'node-elsewhere', pid: 4242, heartbeat: Date.now() - 31 * 60_000 });
    (await acquireLock(dir)).release();
    process.env.RESNET_EXP_LOCK_STALE_S = '2';
    try {
      writeLock(dir, { host: 'node-elsewhere', pid: 4242, heartbeat: Date.now() - 3_000 });
      (await acquireLock(dir)).release();
    } finally {
      delete process.env.RESNET_EXP_LOCK_STALE_S;
    }
  });

  it('a holder whose lock was taken over stops at its next heartbeat', async () => {
    const dir = tempDir();
    const lock = await acquireLock(dir);
    lock.heartbeat(true);
    writeLock(dir, { host: 'node-elsewhere', pid: 7, token: 'thief' });
    assert.throws(() => lock.heartbeat(true), /run\.lock now belongs to host node-elsewhere pid 7/);
    lock.release();
    assert.equal(readLock(path.join(dir, 'run.lock'))?.token, 'thief', 'release leaves a lock that is not ours');
  });

  it('waitForLock: waits for the holder, with one message line, then takes the lock', async () => {
    const dir = tempDir();
    process.env.RESNET_EXP_LOCK_POLL_S = '0.05';
    try {
      const first = await acquireLock(dir);
      const lines: string[] = [];
      const waiting = acquireLock(dir, { wait: true, log: (l) => lines.push(l) });
      await new Promise((r) => setTimeout(r, 300));
      first.release();
      const second = await waiting;
      assert.equal(lines.length, 1, lines.join('\n'));
      assert.match(lines[0], /run\.lock is held by pid \d+ .*; waiting/);
      second.release();
    } finally {
      delete process.env.RESNET_EXP_LOCK_POLL_S;
    }
  });

  it('processes racing for a stale lock: exactly one wins, none waits for ever', async () => {
    const dir = tempDir();
    const go = path.join(tempDir(), 'go');
    writeLock(dir, { pid: 99999999 }); // stale: every contender tries to take it over
    // The built module (pretest builds it): plain node starts far faster than tsx.
    const script = `
      const fs = require('node:fs');
      const { acquireLock } = require(${JSON.stringify(path.join(ROOT, 'dist/experiment/lock.js'))});
      console.log('ready');
      const wait = () => fs.existsSync(${JSON.stringify(go)}) ? race() : setTimeout(wait, 5);
      const race = () => acquireLock(process.argv[1]).then(
        (l) => { console.log('won'); setTimeout(() => l.release(), 1000); },
        (e) => { console.log('lost ' + e.constructor.name); });
      wait();`;
    let ready = 0;
    const racers = Array.from(
      { length: 4 },
      () =>
        new Promise<string>((resolve) => {
          const c = spawn(process.execPath, ['-e', script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          c.stdout.on('data', (d: Buffer) => {
            out += d.toString();
            if (/ready/.test(d.toString()) && ++ready === 4) fs.writeFileSync(go, '');
          });
          c.on('exit', () => resolve(out.replace('ready', '').trim()));
        }),
    );
    const results = await Promise.all(racers);
    assert.equal(results.filter((r) => r === 'won').length, 1, results.join(', '));
    assert.equal(results.filter((r) => r === 'lost LockError').length, 3, results.join(', '));
    assert.deepEqual(fs.readdirSync(dir), [], 'no lock or temp file left');
  });
});
