#!/usr/bin/env bash
# The fleet integration test: several managed hosts (real sshd + real QEMU each) and the Xen lab's
# Domain-0, driven by ansible-playbook; see test_fleet.py. Needs VDEV_WHEEL; the Xen part needs
# XENLAB_SSH_URI and XENSTORED_PATH (`tests/xenlab/xenlab up`).
set -euo pipefail
cd "$(dirname "$0")"
exec python -m pytest -q --durations=0 -rs -p no:cacheprovider -o addopts= --timeout 900 test_fleet.py "$@"
