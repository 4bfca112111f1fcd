#!/usr/bin/env bash
# The one set-up command, from a fresh clone: the system library of the native engine
# (oneDNN, Debian/Ubuntu package libdnnl-dev) when apt can install it, then npm ci, which
# builds the engine (scripts/build-native.js) and the TypeScript (npm run build).
# Without oneDNN everything still installs and the CLI falls back to another engine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/include/oneapi/dnnl/dnnl.hpp ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "setup: installing oneDNN (libdnnl-dev) with apt-get"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libdnnl-dev; }; then
      echo "setup: warning: could not install libdnnl-dev; the native engine will not be built" >&2
    fi
  else
    echo "setup: warning: no apt-get here; install oneDNN 2.x headers to build the native engine" >&2
  fi
fi

npm ci --no-audit --no-fund
node bin/resnet-exp --version >/dev/null
echo "setup: done. Try: npx resnet-exp summary --depth 20"
