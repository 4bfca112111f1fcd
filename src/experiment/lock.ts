// run.lock: one writer per run folder, also when the folder is on a shared (NFS) file system
// and the contenders run on different hosts (a replacement pod beside a terminating one).
//
// No flock/fcntl locks: they are unreliable or absent on NFS. Instead the lock is a small
// JSON file naming its holder (host, pid, the pid's start time, a random token) with a
// heartbeat time:
// - created by link(2) of a fully written temp file: an exclusive create (EEXIST when taken)
//   that is atomic on NFS too and never shows a half-written lock to a contender (a plain
//   'wx' create followed by a write would);
// - the heartbeat is refreshed by write-temp + rename, after checking the token is still ours;
// - a lock on this host holds while its pid is alive with the same start time (Linux:
//   /proc/<pid>/stat field 22), so a pid reused by an unrelated process is seen as stale;
// - a lock of another host holds while its heartbeat is fresher than staleSeconds();
// - a stale lock is removed only under a takeover claim (see removeStale), so a contender
//   that judged an old lock stale never removes the newer lock that replaced it.
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const LOCK_FILE = 'run.lock';

/**
 * A lock of another host is stale when its heartbeat is older than this. The heartbeat is
 * written between training steps and around evaluations, so the longest gap is one step or
 * one evaluation: seconds to a few minutes for the 1202-layer net on a small node. 30 min
 * is far beyond that and also absorbs clock skew between hosts (the heartbeat is the
 * holder's wall clock, compared with ours). Override with RESNET_EXP_LOCK_STALE_S.
 */
const DEFAULT_STALE_S = 30 * 60;
/** Heartbeat writes at most this often: a step of a small net takes milliseconds. */
const HEARTBEAT_EVERY_MS = 5000;
/** How often a waiting run looks at the lock again. Override with RESNET_EXP_LOCK_POLL_S. */
const DEFAULT_POLL_S = 5;

export class LockError extends Error {}

export interface LockInfo {
  host: string;
  pid: number;
  /** Start time of `pid` in clock ticks since boot (Linux), null where unknown. */
  start: string | null;
  /** Last heartbeat, ms since the epoch (the holder's clock). */
  heartbeat: number;
  /** Unique per acquisition: tells this lock from a later one of the same process. */
  token: string;
}

export function staleSeconds(): number {
  const v = Number(process.env.RESNET_EXP_LOCK_STALE_S);
  return Number.isFinite(v) && v > 0 ? v : DEFAULT_STALE_S;
}

function pollSeconds(): number {
  const v = Number(process.env.RESNET_EXP_LOCK_POLL_S);
  return Number.isFinite(v) && v > 0 ? v : DEFAULT_POLL_S;
}

/** Field 22 of /proc/<pid>/stat (after the parenthesised command, which may hold spaces). */
export function processStart(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[22 - 3] ?? null; // fields[0] is field 3 (state)
  } catch {
    return null;
  }
}

/** Linux: true when `pid` started after `ms` (so it cannot have written a lock at `ms`). */
function startedAfter(pid: number, ms: number): boolean {
  const start = processStart(pid);
  const btime = /^btime (\d+)$/m.exec(safeRead('/proc/stat'));
  const ticks = Number(start);
  if (start === null || !Number.isFinite(ticks) || !btime) return false;
  // USER_HZ is 100 on every Linux ABI; one second of slack for the file time's resolution.
  return Number(btime[1]) * 1000 + ticks * 10 > ms + 1000;
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie (dead, not yet reaped by its parent) answers kill(0) but writes nothing more.
  const stat = safeRead(`/proc/${pid}/stat`);
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** Reads a lock file; undefined when it is absent, null when it is not a lock we wrote. */
export function readLock(file: string): LockInfo | null | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const v = JSON.parse(text) as Partial<LockInfo>;
    if (typeof v.host === 'string' && typeof v.pid === 'number' && typeof v.token === 'string') {
      return { host: v.host, pid: v.pid, start: v.start ?? null, heartbeat: Number(v.heartbeat), token: v.token };
    }
  } catch {
    // Not JSON: a lock of an older version (a bare pid) or debris; handled below.
  }
  // The bare-pid lock of earlier versions: this host, start time unknown, the file's mtime
  // as its heartbeat (a process that started after it cannot be the one that wrote it).
  if (/^\d+\s*$/.test(text)) {
    const pid = Number.parseInt(text, 10);
    return { host: os.hostname(), pid, start: null, heartbeat: fs.statSync(file).mtimeMs, token: `pid-${pid}` };
  }
  return null;
}

/** Why a lock is still held, or null when it is stale (its holder is gone). */
export function holdReason(lock: LockInfo | null, now = Date.now()): string | null {
  if (lock === null) return null; // unreadable debris: no holder can be named or asked
  if (lock.host === os.hostname()) {
    if (!alive(lock.pid)) return null;
    const start = processStart(lock.pid);
    if (lock.start !== null && start !== null && start !== lock.start) return null; // pid reused
    if (lock.start === null && startedAfter(lock.pid, lock.heartbeat)) return null; // reused, old-style lock
    return `held by pid ${lock.pid} on this host (${lock.host})`;
  }
  const age = (now - lock.heartbeat) / 1000;
  if (age > staleSeconds()) return null;
  return `held by pid ${lock.pid} on host ${lock.host} (heartbeat ${Math.max(0, Math.round(age))} s ago)`;
}

function writeTemp(dir: string, info: LockInfo): string {
  const tmp = path.join(dir, `${LOCK_FILE}.tmp-${process.pid}-${info.token}`);
  fs.writeFileSync(tmp, JSON.stringify(info) + '\n');
  return tmp;
}

/** The lock of one run folder, held by this process. */
export class RunLock {
  private lastBeat = Date.now();
  private released = false;

  constructor(
    readonly dir: string,
    private info: LockInfo,
  ) {}

  get file(): string {
    return path.join(this.dir, LOCK_FILE);
  }

  /** Throws LockError if run.lock is no longer ours: this process must stop writing. */
  verify(): void {
    const now = readLock(this.file);
    if (!now || now.token !== this.info.token) {
      const who = now ? `host ${now.host} pid ${now.pid}` : 'nobody';
      throw new LockError(
        `${this.file} now belongs to ${who}; this run stops so that the folder never has two writers`,
      );
    }
  }

  /** Cheap: call it between steps. Writes the heartbeat at most every few seconds. */
  heartbeat(force = false): void {
    if (this.released) return;
    const now = Date.now();
    if (!force && now - this.lastBeat < HEARTBEAT_EVERY_MS) return;
    this.verify();
    this.info = { ...this.info, heartbeat: now };
    const tmp = writeTemp(this.dir, this.info);
    fs.renameSync(tmp, this.file);
    this.lastBeat = now;
  }

  /** Removes run.lock if it is still ours. */
  release(): void {
    if (this.released) return;
    this.released = true;
    const now = readLock(this.file);
    if (now && now.token === this.info.token) fs.rmSync(this.file, { force: true });
  }
}

/** What tells one lock (or claim) from another: its token; unreadable debris has none. */
function lockId(lock: LockInfo | null | undefined): string | undefined {
  return lock === undefined ? undefined : lock === null ? 'unreadable' : lock.token;
}

/** The claim a contender creates before it removes `file`, judged stale with id `id`. */
export function takeoverClaim(file: string, id: string): string {
  // The id comes from a file anyone could have written: hashed into a safe name. The claimed
  // file's name is in the hash too, so a claim on a (dead) claim never names itself.
  const hash = createHash('sha256')
    .update(`${path.basename(file)}\n${id}`)
    .digest('hex');
  return path.join(path.dirname(file), `${LOCK_FILE}.takeover-${hash.slice(0, 16)}`);
}

const TAKEOVER_PREFIX = `${LOCK_FILE}.takeover-`;

/** Creates `target` holding `info`, complete or not at all: false when it exists. */
function linkNew(dir: string, info: LockInfo, target: string): boolean {
  const tmp = writeTemp(dir, info);
  try {
    fs.linkSync(tmp, target);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return false;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/**
 * Removes `file`, judged stale with id `judged`, unless it changed since. Returns null when
 * the caller should look at run.lock again, or why it has to wait.
 *
 * Of the contenders that judged the same lock stale, only the one that creates the claim
 * run.lock.takeover-<id> (an exclusive link) may remove it, and only after reading it again.
 * Nothing else removes or replaces a lock of that id (its holder is gone), so the file it reads
 * is the file it removes. Renaming the lock aside, as before, was not enough: a contender
 * that judged an old lock stale could move the newer lock that replaced it, and a third
 * process could take the free name meanwhile: two holders until the next heartbeat (seen in CI).
 */
export function removeStale(file: string, judged: string, info: LockInfo, depth = 0): string | null {
  const claim = takeoverClaim(file, judged);
  if (!linkNew(path.dirname(file), info, claim)) {
    const other = readLock(claim);
    if (other === undefined) return null; // that takeover just finished
    const reason = holdReason(other);
    if (reason !== null) return `being taken over from its stale holder; the takeover is ${reason}`;
    // A bound for claims that are debris on debris (written by hand); a real chain needs a
    // claimer killed inside its few microseconds at every level.
    if (depth >= 3) return `stuck: ${claim} is left by an unfinished takeover; remove it`;
    // The claimer died half-way: its claim is a stale lock of its own, removed the same way.
    return removeStale(claim, lockId(other)!, info, depth + 1);
  }
  try {
    if (lockId(readLock(file)) === judged) fs.rmSync(file, { force: true });
  } finally {
    fs.rmSync(claim, { force: true });
  }
  return null;
}

/**
 * Claims of takeovers that died half-way: moot once this process holds the lock, since the
 * ids they claim never come back. The claim on our own id is not ours to remove.
 */
function removeLeftClaims(dir: string, ours: string): void {
  const keep = path.basename(takeoverClaim(path.join(dir, LOCK_FILE), ours));
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith(TAKEOVER_PREFIX) && name !== keep) fs.rmSync(path.join(dir, name), { force: true });
  }
}

/** One attempt: the lock, or the reason it is held. */
function tryAcquire(dir: string): RunLock | string {
  const file = path.join(dir, LOCK_FILE);
  const info: LockInfo = {
    host: os.hostname(),
    pid: process.pid,
    start: processStart(process.pid),
    heartbeat: Date.now(),
    token: randomBytes(8).toString('hex'),
  };
  for (let attempt = 0; attempt < 5; attempt++) {
    if (linkNew(dir, info, file)) {
      removeLeftClaims(dir, info.token);
      return new RunLock(dir, info);
    }
    const held = readLock(file);
    if (held === undefined) continue; // released meanwhile: try again
    const reason = holdReason(held) ?? removeStale(file, lockId(held)!, info);
    if (reason !== null) return `${file} is ${reason}`;
  }
  return `${file} keeps changing hands; try again`;
}

export interface AcquireOptions {
  /** Wait for a held lock (a scheduler task) instead of failing at once (a plain `run`). */
  wait?: boolean;
  log?: (line: string) => void;
}

/** Takes `<dir>/run.lock` for this process. Held by a live process: LockError, or waits. */
export async function acquireLock(dir: string, o: AcquireOptions = {}): Promise<RunLock> {
  let told = false;
  for (;;) {
    const got = tryAcquire(dir);
    if (typeof got !== 'string') return got;
    if (!o.wait) throw new LockError(`${got}; wait for it to finish or stop it first`);
    if (!told) {
      o.log?.(`${got}; waiting for it (checking every ${pollSeconds()} s)`);
      told = true;
    }
    await new Promise((resolve) => setTimeout(resolve, pollSeconds() * 1000));
  }
}
