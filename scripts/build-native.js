#!/usr/bin/env node
// Builds the oneDNN engine (native/) when oneDNN's headers are installed.
// It never fails `npm install`: without oneDNN the CLI falls back to another engine
// and says why (see src/engine/select.ts).
const { existsSync } = require('node:fs');
const { spawnSync } = require('node:child_process');

const header = ['/usr/include/oneapi/dnnl/dnnl.hpp', '/usr/local/include/oneapi/dnnl/dnnl.hpp'].find(existsSync);
if (!header) {
  console.warn('resnet-exp: oneDNN headers not found (Debian/Ubuntu: apt-get install libdnnl-dev); the native engine is not built.');
  process.exit(0);
}
const gyp = process.env.npm_config_node_gyp;
const cmd = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
const r = spawnSync(cmd[0], cmd[1], { stdio: 'inherit' });
if (r.status !== 0) {
  console.warn('resnet-exp: building the native engine failed; the CLI will fall back to a slower engine.');
}
process.exit(0);
