#!/bin/sh
# Install what the QEMU driver's tests need: qemu-system-x86_64 and qemu-img. Idempotent and
# quiet: does nothing when both are there.
#
# On a fresh Debian bookworm machine of this project, qemu-utils 10.0 from backports is
# preinstalled; installing qemu-system-x86 (7.2) alone then removes it (version conflict) and
# leaves no qemu-img. So both are installed together at the same bookworm version, downgrading
# qemu-utils where needed.
set -eu
if command -v qemu-system-x86_64 >/dev/null 2>&1 && command -v qemu-img >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    echo "install-test-deps: no qemu-system-x86 package is available from apt" >&2
    exit 1
fi
apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "qemu-system-x86=$version" "qemu-utils=$version" >/dev/null
command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null
