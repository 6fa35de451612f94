#!/usr/bin/env bash
# Installs PostgreSQL (the real server the PostgreSQL tests start on 127.0.0.1, each its own)
# from Debian's packages when it is missing. Idempotent.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
  postgresql postgresql-client >&2
