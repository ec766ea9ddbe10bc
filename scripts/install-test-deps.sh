#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian bookworm machine of this project's kind.
# Idempotent and quiet; run as root (CI and the developers' machines are root).
set -euo pipefail
need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
