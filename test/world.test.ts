// The launcher from the environment, and the one-line errors of a data-parallel set-up that
// cannot work (no MPI process needed: these are caught before MPI is touched).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { checkShards } from '../src/distributed/data-parallel';
import { detectLauncher, threadsPerRank, WorldError } from '../src/distributed/world';
import { cli, tempDir, writeSyntheticCifar } from './helpers';

describe('detectLauncher', () => {
  it('reads mpirun, srun and PMIx environments, and is alone otherwise', () => {
    assert.deepEqual(detectLauncher({}), { launcher: 'none', rank: 0, size: 1, localSize: 1 });
    assert.deepEqual(
      detectLauncher({ OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_RANK: '3', OMPI_COMM_WORLD_LOCAL_SIZE: '2' }),
      { launcher: 'mpirun', rank: 3, size: 4, localSize: 2 },
    );
    assert.deepEqual(
      detectLauncher({ SLURM_PROCID: '1', SLURM_STEP_NUM_TASKS: '2', SLURM_STEP_TASKS_PER_NODE: '2(x1)' }),
      { launcher: 'srun', rank: 1, size: 2, localSize: 2 },
    );
    // A plain sbatch shell has SLURM_NTASKS and SLURM_PROCID but is one process.
    assert.equal(detectLauncher({ SLURM_PROCID: '0', SLURM_NTASKS: '2' }).size, 1);
    assert.deepEqual(detectLauncher({ PMIX_RANK: '0' }), { launcher: 'pmix', rank: 0, size: 0, localSize: 1 });
  });

  it('shares the cores among the ranks of one machine', () => {
    assert.equal(threadsPerRank({ localSize: 2 }, 8), 4);
    assert.equal(threadsPerRank({ localSize: 4 }, 2), 1);
  });
});

describe('shards', () => {
  it('the global batch must split into equal shards', () => {
    checkShards(128, 2, 1);
    checkShards(128, 2, 2);
    assert.throws(() => checkShards(128, 3, 1), WorldError);
    assert.throws(() => checkShards(16, 1, 3), /--batch 16 does not split into equal shards over --bn-shards 3/);
    assert.throws(() => checkShards(10, 2, 2), /over 2 processes x --bn-shards 2/);
  });

  it('run: one line, exit 1, for a batch that does not split and for mpirun without the native engine', () => {
    const dir = tempDir();
    const data = path.join(dir, 'data');
    writeSyntheticCifar(data, 64);
    const base = ['run', '--depth', '8', '--iterations', '2', '--batch', '16', '--data-dir', data];
    const args = [...base, '--records-per-file', '64', '--out', path.join(dir, 'out')];
    const r = cli([...args, '--bn-shards', '3']);
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^error: --batch 16 does not split into equal shards over --bn-shards 3/);

    const m = cli([...args, '--engine', 'cpu'], { env: { OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '0' } });
    assert.equal(m.status, 1);
    assert.equal(m.stderr.trim().split('\n').length, 1, m.stderr);
    assert.match(
      m.stderr,
      /^error: started by mpirun with 2 processes, but data-parallel training needs --engine native/,
    );
  });
});
