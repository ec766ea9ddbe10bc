#!/usr/bin/env bash
# The tests that need the Xen lab: the Xen driver's (crates/driver-xen: its unit tests and every
# file in tests/) and the libvirt driver's tests/xen.rs (libvirt's Xen driver in the lab's
# Domain-0). Needs the lab's environment exported (`set -a; eval "$(tests/xenlab/xenlab up)"`).
#
# scripts/test.sh runs them beside its other stages: these tests spend most of their time waiting
# for the lab's guests, the others on this machine's cores. They are run directly from the one
# build of the workspace's test binaries (scripts/test-binaries.sh: no cargo lock held while
# they run, no second build with other features). The `vdev` command that dom0.rs sends into
# Domain-0 is copied from that build (VDEV_TEST_XEN_VDEV), since later stages build it again
# with other features.
#
# `scripts/test-xenlab.sh build` only builds, `scripts/test-xenlab.sh run` only runs what was
# built; with no argument, both. test.sh builds in the foreground and runs in the background.
#
# Exit status: 0 when every test binary passed, 1 otherwise (every binary is run, as
# `cargo test --no-fail-fast` would).
set -euo pipefail
mode=${1:-all}
case "$mode" in
    build | run | all) ;;
    *)
        echo "usage: $0 [build|run]" >&2
        exit 2
        ;;
esac
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-$PWD/target}
export VDEV_TEST_XEN_VDEV="$target/xenlab-tests/vdev"
if [ "$mode" != run ]; then
    scripts/test-binaries.sh build
    mkdir -p "$target/xenlab-tests"
    cp "$target/debug/vdev" "$VDEV_TEST_XEN_VDEV"
    if ! "$VDEV_TEST_XEN_VDEV" drivers | grep -qw xen; then
        echo "test-xenlab.sh: $target/debug/vdev was built without the Xen driver" >&2
        exit 1
    fi
fi
[ "$mode" != build ] || exit 0
exec scripts/test-binaries.sh run lab
