// Who we are in a data-parallel run: the launcher (mpirun or srun) tells each process its
// rank and the world size through the environment; MPI (native/mpi.cc) connects them.
import { loadAddon, type MpiOp, type NativeAddon } from '../engine/native/addon';

/** A user-facing error about the parallel set-up (one line). */
export class WorldError extends Error {}

export interface LauncherInfo {
  launcher: 'mpirun' | 'srun' | 'pmix' | 'none';
  rank: number;
  /** 0: unknown until MPI is initialized. */
  size: number;
  /** Ranks on this machine: they share its cores. */
  localSize: number;
}

/** The collectives one data-parallel run needs (all ranks call each, in the same order). */
export interface World {
  rank: number;
  size: number;
  /** Host name of each rank, by rank. */
  hosts: string[];
  localSize: number;
  launcher: LauncherInfo['launcher'];
  /** In-place sum over ranks. */
  sumF32(buffer: Float32Array): void;
  /** In-place sum, min or max over ranks. */
  reduceF64(buffer: Float64Array, op: MpiOp): void;
  /** Rank 0's bytes to every rank. */
  broadcast(buffer: Uint8Array | Float32Array): void;
  /** Ends every rank with `code` (a failure on one rank must not leave the others waiting). */
  abort(code: number): never;
}

function int(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

/**
 * The launcher from the environment: OpenMPI's mpirun sets OMPI_COMM_WORLD_*, PMIx
 * launchers PMIX_RANK, srun SLURM_PROCID and SLURM_STEP_NUM_TASKS (not SLURM_NTASKS, which
 * a plain sbatch shell has too, where this process is alone).
 */
export function detectLauncher(env: NodeJS.ProcessEnv = process.env): LauncherInfo {
  const ompiSize = int(env.OMPI_COMM_WORLD_SIZE);
  if (ompiSize !== undefined) {
    return {
      launcher: 'mpirun',
      rank: int(env.OMPI_COMM_WORLD_RANK) ?? 0,
      size: ompiSize,
      localSize: int(env.OMPI_COMM_WORLD_LOCAL_SIZE) ?? 1,
    };
  }
  const stepTasks = int(env.SLURM_STEP_NUM_TASKS);
  if (stepTasks !== undefined && int(env.SLURM_PROCID) !== undefined) {
    return {
      launcher: 'srun',
      rank: int(env.SLURM_PROCID) ?? 0,
      size: stepTasks,
      localSize: int(env.SLURM_STEP_TASKS_PER_NODE?.split('(')[0]) ?? 1,
    };
  }
  // Another PMIx launcher (e.g. prterun): it does not export the size; MPI will tell (0).
  if (int(env.PMIX_RANK) !== undefined)
    return { launcher: 'pmix', rank: int(env.PMIX_RANK) ?? 0, size: 0, localSize: 1 };
  return { launcher: 'none', rank: 0, size: 1, localSize: 1 };
}

/** The one-process world: every collective is the identity. */
export const SOLO: World = {
  rank: 0,
  size: 1,
  hosts: [],
  localSize: 1,
  launcher: 'none',
  sumF32: () => {},
  reduceF64: () => {},
  broadcast: () => {},
  abort: (code) => process.exit(code),
};

let joined: World | undefined;

/**
 * Joins the launcher's world (MPI_Init on first call). Without a launcher, or with one
 * process, no MPI is used at all. `useNative` is false when the run asked for another
 * engine: the collectives live in the native addon, so data-parallel runs need it.
 */
export function joinWorld(useNative: boolean, env: NodeJS.ProcessEnv = process.env): World {
  const info = detectLauncher(env);
  if (info.size === 1 || info.launcher === 'none') return { ...SOLO, hosts: [] };
  if (joined) return joined;
  if (!useNative) {
    throw new WorldError(
      `started by ${info.launcher} with ${info.size || 'several'} processes, but data-parallel training needs --engine native (or auto)`,
    );
  }
  let addon: NativeAddon;
  try {
    addon = loadAddon();
  } catch (e) {
    throw new WorldError(
      `started by ${info.launcher} with ${info.size || 'several'} processes: ${(e as Error).message}`,
    );
  }
  const { mpiInit, mpiAllreduceF32, mpiAllreduceF64, mpiBcast, mpiAbort, mpiFinalize } = addon;
  if (!addon.hasMpi || !mpiInit || !mpiAllreduceF32 || !mpiAllreduceF64 || !mpiBcast || !mpiAbort || !mpiFinalize) {
    throw new WorldError(
      `started by ${info.launcher} with ${info.size || 'several'} processes, but the native engine was built without MPI: ` +
        'apt-get install libopenmpi-dev openmpi-bin, then `npm run build:native`',
    );
  }
  const me = mpiInit();
  // Every exit but abort() (which never returns) is one all ranks agreed on: finished,
  // stopped together, or a failure that every rank saw. A failure on one rank goes through
  // abort(), since MPI_Finalize would wait for ranks still in a collective.
  process.on('exit', () => mpiFinalize());
  if (info.size === 0 && me.size === 1) return { ...SOLO, hosts: [me.host] };
  if ((info.size !== 0 && me.size !== info.size) || me.rank !== info.rank) {
    throw new WorldError(
      `MPI sees rank ${me.rank} of ${me.size} but ${info.launcher} announced ${info.rank} of ${info.size}: ` +
        '(under srun, use --mpi=pmix)',
    );
  }
  const world: World = {
    rank: me.rank,
    size: me.size,
    hosts: gatherHosts(me.host, me.rank, me.size, (buffer, root) => mpiBcast({ buffer, root })),
    localSize: info.localSize,
    launcher: info.launcher,
    sumF32: (buffer) => mpiAllreduceF32({ buffer }),
    reduceF64: (buffer, op) => mpiAllreduceF64({ buffer, op }),
    broadcast: (buffer) => mpiBcast({ buffer, root: 0 }),
    abort: (code) => mpiAbort({ code }),
  };
  joined = world;
  return world;
}

/** Every rank's host name, by rank (one broadcast per rank: a few dozen bytes each). */
function gatherHosts(host: string, rank: number, size: number, bcast: (b: Uint8Array, root: number) => void): string[] {
  const hosts: string[] = [];
  for (let r = 0; r < size; r++) {
    const buf = new Uint8Array(256);
    if (r === rank) buf.set(new TextEncoder().encode(host.slice(0, 255)));
    bcast(buf, r);
    const end = buf.indexOf(0);
    hosts.push(new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end)));
  }
  return hosts;
}

/** The world joined by joinWorld, if any (to abort it on a failure). */
export function joinedWorld(): World | undefined {
  return joined;
}

/** A reporter for ranks other than 0: rank 0 alone shows progress and messages. */
export const quietReporter = {
  log: () => {},
  start: () => {},
  step: () => {},
  row: () => {},
  stop: () => {},
};

/** Default compute threads per rank: the machine's cores shared by the ranks on it. */
export function threadsPerRank(world: Pick<World, 'localSize'>, cores: number): number {
  return Math.max(1, Math.floor(cores / Math.max(1, world.localSize)));
}
