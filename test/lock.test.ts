// run.lock (src/experiment/lock.ts): one writer per run folder, on one host or several
// sharing a file system.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  acquireLock,
  LockError,
  processStart,
  readLock,
  removeStale,
  takeoverClaim,
  type LockInfo,
} from '../src/experiment/lock';
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

  it('a stale lock is removed only under its takeover claim, and only if it is still the one judged', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'run.lock');
    const claim = takeoverClaim(file, 'dead-holder');
    const claimer = (pid: number): LockInfo => ({
      host: os.hostname(),
      pid,
      start: processStart(pid),
      heartbeat: Date.now(),
      token: 'claimer',
    });
    // A live process is taking the stale lock over: the others leave it to it.
    writeLock(dir, { pid: 99999999, token: 'dead-holder' });
    fs.writeFileSync(claim, JSON.stringify(claimer(process.pid)));
    await assert.rejects(acquireLock(dir), (e: Error) => {
      assert.ok(e instanceof LockError);
      assert.match(e.message, /run\.lock is being taken over from its stale holder; the takeover is held by pid \d+/);
      return true;
    });
    assert.equal(readLock(file)?.token, 'dead-holder', 'the claimed lock is left to its claimer');
    // The claimer died half-way: its claim is stale in turn, taken over the same way.
    fs.writeFileSync(claim, JSON.stringify(claimer(99999999)));
    const lock = await acquireLock(dir);
    assert.equal(readLock(file)?.pid, process.pid);
    assert.deepEqual(fs.readdirSync(dir), ['run.lock'], 'no claim left');
    // A late contender that judged the old lock stale gets the claim and finds the new lock: no removal.
    assert.equal(removeStale(file, 'dead-holder', claimer(process.pid)), null);
    assert.deepEqual(fs.readdirSync(dir), ['run.lock'], 'the new lock stays, the claim goes');
    assert.equal(readLock(file)?.pid, process.pid);
    fs.writeFileSync(takeoverClaim(file, 'gone'), JSON.stringify(claimer(99999999)));
    lock.release();
    // A claim left by a takeover that died after removing its lock goes with the next acquisition.
    const next = await acquireLock(dir);
    assert.deepEqual(fs.readdirSync(dir), ['run.lock'], 'the left claim is gone');
    next.release();
  });

  it('processes racing for a stale lock: exactly one wins, none waits for ever', async () => {
    const dir = tempDir();
    const ctl = tempDir();
    const go = path.join(ctl, 'go');
    const done = path.join(ctl, 'done');
    writeLock(dir, { pid: 99999999 }); // stale: every contender tries to take it over
    // The built module (pretest builds it): plain node starts far faster than tsx. A winner
    // holds the lock until every racer has reported, so a slow racer cannot win after it.
    const script = `
      const fs = require('node:fs');
      const { acquireLock } = require(${JSON.stringify(path.join(ROOT, 'dist/experiment/lock.js'))});
      console.log('ready');
      const when = (f, then) => fs.existsSync(f) ? then() : setTimeout(() => when(f, then), 2);
      when(${JSON.stringify(go)}, () => acquireLock(process.argv[1]).then(
        (l) => { console.log('won'); when(${JSON.stringify(done)}, () => l.release()); },
        (e) => { console.log('lost ' + e.constructor.name); }));`;
    const n = 8;
    let ready = 0;
    let reported = 0;
    const racers = Array.from(
      { length: n },
      () =>
        new Promise<string>((resolve) => {
          const c = spawn(process.execPath, ['-e', script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          c.stdout.on('data', (d: Buffer) => {
            out += d.toString();
            if (/ready/.test(d.toString()) && ++ready === n) fs.writeFileSync(go, '');
            if (/won|lost/.test(d.toString()) && ++reported === n) fs.writeFileSync(done, '');
          });
          c.on('exit', () => resolve(out.replace('ready', '').trim()));
        }),
    );
    const results = await Promise.all(racers);
    assert.equal(results.filter((r) => r === 'won').length, 1, results.join(', '));
    assert.equal(results.filter((r) => r === 'lost LockError').length, n - 1, results.join(', '));
    assert.deepEqual(fs.readdirSync(dir), [], 'no lock, claim or temp file left');
  });
});
