// Crash-safe file writes: readers only ever see the old or the new content, and a failed
// write leaves no temp file behind (after ENOSPC a leftover would keep the disk full).
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The output cannot be written (read-only, full, no permission): one line naming it. */
export class OutputError extends Error {}

/** Suffix of the temp files writeFileAtomic makes; a folder's owner removes leftovers. */
export const TEMP_MARK = '.tmp-';

const WHAT: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
};

/** An OutputError for a failed file operation, or the error itself when it is not about the output. */
export function outputError(target: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException).code;
  if (code !== undefined && code in WHAT) {
    return new OutputError(`cannot write ${target}: ${code} (${WHAT[code]}); free space or choose another --out`);
  }
  return e as Error;
}

/**
 * Writes a file so that readers only ever see the old or the new content: a temp file
 * beside it, fsync, rename over the target, fsync the folder.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = `${file}${TEMP_MARK}${process.pid}`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw outputError(path.dirname(file), e);
  }
  try {
    const dir = fs.openSync(path.dirname(file), 'r');
    fs.fsyncSync(dir);
    fs.closeSync(dir);
  } catch {
    // Some file systems cannot fsync a folder; the rename is still atomic.
  }
}
