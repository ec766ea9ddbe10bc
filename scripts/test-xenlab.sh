#!/usr/bin/env bash
# The tests that need the Xen lab: the Xen driver's (crates/driver-xen: its unit tests and every
# file in tests/) and the libvirt driver's tests/xen.rs (libvirt's Xen driver in the lab's
# Domain-0). Needs the lab's environment exported (`set -a; eval "$(tests/xenlab/xenlab up)"`).
#
# scripts/test.sh runs this beside its other stages: these tests spend most of their time waiting
# for the lab's guests, the others on this machine's cores. cargo holds its lock on target/ while
# tests run, so a second `cargo test` would wait for the first: the test binaries are built first
# (`cargo test --no-run`) and then run directly, each from its package's directory as cargo runs
# it. The `vdev` command that dom0.rs sends into Domain-0 is built here too, and copied, for the
# same reason (VDEV_TEST_XEN_VDEV).
#
# `scripts/test-xenlab.sh build` only builds (and lists the binaries in
# target/xenlab-tests/binaries.txt), `scripts/test-xenlab.sh run` only runs what was built; with
# no argument, both. test.sh builds in the foreground and runs in the background.
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
export PATH="$HOME/.cargo/bin:$PATH"

target=${CARGO_TARGET_DIR:-$PWD/target}
list="$target/xenlab-tests/binaries.txt"
export VDEV_TEST_XEN_VDEV="$target/xenlab-tests/vdev"

# Each test binary as EXECUTABLE<TAB>PACKAGE DIRECTORY, from cargo's build messages, in the order
# cargo test would run them.
binaries() {
    {
        cargo test -q --no-run --message-format=json -p vdev-driver-xen --lib --tests
        cargo test -q --no-run --message-format=json -p vdev-driver-libvirt --test xen
    } | python3 -c '
import json, os, sys
found = set()
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        found.add((os.path.dirname(m["manifest_path"]), m["target"]["name"], m["executable"]))
# In the order cargo test runs them: by package, then by target.
for d, _, exe in sorted(found):
    print(exe + "\t" + d)
'
}
if [ "$mode" != run ]; then
    cargo build -q -p vdev-cli --features xen --bin vdev
    mkdir -p "$target/xenlab-tests"
    cp "$target/debug/vdev" "$VDEV_TEST_XEN_VDEV"
    binaries >"$list"
    if [ ! -s "$list" ]; then
        echo "test-xenlab.sh: cargo named no test binaries" >&2
        exit 1
    fi
fi
[ "$mode" != build ] || exit 0
mapfile -t bins <"$list"

rc=0
failed=()
for entry in "${bins[@]}"; do
    exe=${entry%%$'\t'*}
    dir=${entry#*$'\t'}
    start=$SECONDS
    echo "     Running $(basename "$exe") (from $dir)"
    if ! (cd "$dir" && CARGO_MANIFEST_DIR="$dir" "$exe"); then
        rc=1
        failed+=("$(basename "$exe")")
    fi
    echo "test-xenlab.sh: $(basename "$exe") took $((SECONDS - start)) s"
done
if [ "$rc" -ne 0 ]; then
    echo "test-xenlab.sh: failed: ${failed[*]}" >&2
fi
exit "$rc"
