#!/usr/bin/env node
// Builds the oneDNN engine (native/) when oneDNN's headers are installed.
// It never fails `npm install`: without oneDNN the CLI falls back to another engine
// and says why (see src/engine/select.ts).
const { existsSync } = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const header = ['/usr/include/oneapi/dnnl/dnnl.hpp', '/usr/local/include/oneapi/dnnl/dnnl.hpp'].find(existsSync);
if (!header) {
  console.warn(
    'resnet-exp: oneDNN headers not found (Debian/Ubuntu: apt-get install libdnnl-dev); the native engine is not built.',
  );
  process.exit(0);
}

// node-gyp: the one npm hands us during `npm install`, else the copy bundled with npm,
// else whatever is on PATH.
const prefix = path.dirname(path.dirname(process.execPath));
const bundled = path.join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
const gyp = process.env.npm_config_node_gyp || (existsSync(bundled) ? bundled : null);
// One compiler per core: five sources, compiled one after another, take over a minute.
const args = ['rebuild', '--jobs=max'];
// MPI (data-parallel training, native/mpi.cc) when OpenMPI's compiler wrapper is installed
// (Debian: libopenmpi-dev); it tells us its include and link flags.
const mpi = ['compile', 'link'].map((what) => spawnSync('mpicc', [`--showme:${what}`], { encoding: 'utf8' }));
const mpiGyp = mpi.every((r) => r.status === 0)
  ? ['-Dmpi=1', `-Dmpi_cflags=${mpi[0].stdout.trim()}`, `-Dmpi_libs=${mpi[1].stdout.trim()}`]
  : [];
if (mpiGyp.length === 0) {
  console.warn(
    'resnet-exp: OpenMPI not found (apt-get install libopenmpi-dev); built without MPI (one process per run).',
  );
}
// Distribution packages of node ship the headers node-gyp needs (e.g. /usr/include/node);
// pointing node-gyp at them avoids its download from nodejs.org, which fails offline.
if (existsSync(path.join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`);
// Arguments after `--` go to gyp itself: -D sets binding.gyp's variables.
if (mpiGyp.length > 0) args.push('--', ...mpiGyp);
const cmd = gyp ? [process.execPath, [gyp, ...args]] : ['node-gyp', args];
const r = spawnSync(cmd[0], cmd[1], { stdio: 'inherit', cwd: path.join(__dirname, '..') });
if (r.status !== 0) {
  console.warn('resnet-exp: building the native engine failed; the CLI will fall back to a slower engine.');
}
process.exit(0);
