// Which run folders an analysis command works on, and writing into them safely.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { acquireLock, LockError, type RunLock } from '../experiment/lock';
import { loadRuns } from '../report/runs';
import { RunFolderError } from './trained-run';

/** The named run folders, or every run under `results` that has a checkpoint. */
export function analysisRuns(named: string[], results: string, warn: (m: string) => void): string[] {
  if (named.length > 0) return named.map((d) => path.resolve(d));
  const dirs = loadRuns(results, warn)
    .map((r) => r.dir)
    .filter((d) => fs.existsSync(path.join(d, 'checkpoint.bin')));
  if (dirs.length === 0) throw new RunFolderError(`no trained runs (with a checkpoint.bin) under ${results}`);
  return dirs;
}

/**
 * Runs `write` holding the run's lock, so that an analysis never writes into a folder
 * that a training process owns. Returns false (after a warning) when a trainer holds it.
 */
export async function withRunLock(dir: string, write: () => void, warn: (m: string) => void): Promise<boolean> {
  let lock: RunLock;
  try {
    lock = await acquireLock(dir);
  } catch (e) {
    if (!(e instanceof LockError)) throw e;
    warn(`${dir}: not written, ${e.message}`);
    return false;
  }
  try {
    write();
    return true;
  } finally {
    lock.release();
  }
}
