#!/usr/bin/env bash
# Installs what the operator tests check blobgc's output with, from Debian's packages when
# missing: a real Prometheus Pushgateway (started by the tests on 127.0.0.1), promtool
# (Prometheus's own parser of the text format and of alert rules), and Chromium, which opens
# the HTML reports headless. Idempotent.
set -euo pipefail
if command -v prometheus-pushgateway >/dev/null && command -v promtool >/dev/null \
  && command -v chromium >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
  prometheus-pushgateway prometheus chromium >&2
