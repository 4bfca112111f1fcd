// Crash-safe file writes and the one-process-per-run lock.
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Writes a file so that readers only ever see the old or the new content: a temp file
 * beside it, fsync, rename over the target, fsync the folder.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  try {
    const dir = fs.openSync(path.dirname(file), 'r');
    fs.fsyncSync(dir);
    fs.closeSync(dir);
  } catch {
    // Some file systems cannot fsync a folder; the rename is still atomic.
  }
}

export class LockError extends Error {}

/**
 * Takes `<dir>/run.lock` for this process, or throws LockError if a live process holds it.
 * A lock is a file with the holder's pid, not an mtime heartbeat (proper-lockfile's way):
 * a heartbeat needs the event loop every few seconds, which a synchronous training step of
 * a 1202-layer net cannot promise, and a run killed with -9 could not be resumed until the
 * heartbeat went stale. A pid that is no longer alive means the lock is stale at once.
 */
export function lockRun(dir: string): () => void {
  const file = path.join(dir, 'run.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      return () => fs.rmSync(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
      if (Number.isInteger(pid) && pid !== process.pid && alive(pid)) {
        throw new LockError(`${dir} is being trained by another process (pid ${pid}); wait for it or stop it first`);
      }
      fs.rmSync(file, { force: true });
    }
  }
  throw new LockError(`could not lock ${dir}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
