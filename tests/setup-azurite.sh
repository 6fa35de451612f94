#!/usr/bin/env bash
# Installs Azurite (the Azure Blob Storage emulator the Azure tests start on 127.0.0.1, each
# its own) and Azure's JavaScript client (which creates the tests' containers) from the npm
# registry, with Node.js and npm from Debian's packages when missing. Idempotent; prints the
# directory they are installed in.
set -euo pipefail
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/blobgc-azurite"
if [ ! -x "$DIR/node_modules/.bin/azurite-blob" ] || [ ! -d "$DIR/node_modules/@azure/storage-blob" ]; then
  if ! command -v npm >/dev/null; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nodejs npm >&2
  fi
  mkdir -p "$DIR"
  npm install --prefix "$DIR" --no-audit --no-fund azurite@3 @azure/storage-blob@12 >&2
fi
echo "$DIR"
