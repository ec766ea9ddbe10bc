#!/usr/bin/env bash
# The workspace's test binaries, built once and run directly (as `cargo test` runs them).
#
#   scripts/test-binaries.sh build          `cargo test --workspace --no-run` once; lists its test
#                                           binaries in target/test-binaries/{lab,rest}.txt
#   scripts/test-binaries.sh run LIST[/[PACKAGE:]TARGET] [ARG...]
#                                           runs each binary of LIST (`lab` or `rest`), or only
#                                           those of test target TARGET (of the package in
#                                           crates/PACKAGE, or tests/ for `tests`), each from its
#                                           package's directory, ARGs passed to every one
#   scripts/test-binaries.sh --features F build|run ...
#                                           the same for a second build of the whole workspace
#                                           with features F (`vdev/libvirt,...`), its own lists
#
# `lab` is what needs the Xen lab: the Xen driver's test binaries (its unit tests and every file
# in tests/) and the libvirt driver's tests/xen.rs (libvirt's Xen driver in the lab's Domain-0).
# `rest` is every other test binary of the workspace. Doc tests are not binaries: run them with
# `cargo test --workspace --doc`.
#
# Why not `cargo test -p ...` per part: cargo unifies features over the packages it is given, so
# a subset (`--exclude`, `-p`) builds tokio, qapi, syn and everything above them a second time,
# with other features; and cargo holds its lock on target/ while tests run, so the lab's binaries
# could not run beside another cargo. One build of the whole workspace, then the binaries run
# directly, avoids both. The same holds for a feature of our own (`--features vdev/libvirt`):
# given with `--workspace`, the dependencies' features stay as in the first build, and cargo
# rebuilds only the workspace's crates that the feature changes.
#
# Exit status of `run`: 0 when every binary passed, 1 otherwise (every binary is run, as
# `cargo test --no-fail-fast` would).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

target=${CARGO_TARGET_DIR:-$PWD/target}
dir="$target/test-binaries"
usage() {
    echo "usage: $0 [--features F] build | run lab|rest[/[PACKAGE:]TARGET] [ARG...]" >&2
    exit 2
}
features=()
if [ "${1:-}" = --features ]; then
    [ $# -ge 2 ] || usage
    features=(--features "$2")
    # Each feature set's lists beside the others': target/test-binaries/features-vdev-libvirt...
    dir="$dir/features-$(printf '%s' "$2" | tr -c 'A-Za-z0-9_\n' '-')"
    shift 2
fi

case "${1:-}" in
    build)
        mkdir -p "$dir"
        # Each test binary as EXECUTABLE<TAB>PACKAGE DIRECTORY<TAB>LIST, from cargo's build
        # messages, in the order `cargo test` runs them (by package, then by target).
        cargo test -q --workspace "${features[@]}" --no-run --message-format=json-render-diagnostics |
            python3 -c '
import json, os, sys
out = sys.argv[1]
found = set()
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        d = os.path.dirname(m["manifest_path"])
        pkg = os.path.basename(d)
        name = m["target"]["name"]
        lab = pkg == "driver-xen" or (pkg == "driver-libvirt" and name == "xen")
        found.add((d, name, m["executable"], "lab" if lab else "rest"))
lists = {"lab": [], "rest": []}
for d, _, exe, which in sorted(found):
    lists[which].append(exe + "\t" + d)
for which, rows in lists.items():
    if not rows:
        sys.exit(f"test-binaries.sh: cargo named no {which} test binaries")
    with open(os.path.join(out, which + ".txt"), "w") as f:
        f.write("".join(r + "\n" for r in rows))
' "$dir"
        ;;
    run)
        [ $# -ge 2 ] || usage
        which=${2%%/*}
        only=
        [ "$which" = "$2" ] || only=${2#*/}
        # PACKAGE:TARGET: only the target of that package (several have a target `vdev`).
        only_pkg=
        case "$only" in *:*)
            only_pkg=${only%%:*}
            only=${only#*:}
            ;;
        esac
        shift 2
        case "$which" in lab | rest) ;; *) usage ;; esac
        [ -s "$dir/$which.txt" ] || {
            echo "test-binaries.sh: no $dir/$which.txt: run \`$0 build\` first" >&2
            exit 2
        }
        mapfile -t bins <"$dir/$which.txt"
        rc=0
        ran=0
        failed=()
        for entry in "${bins[@]}"; do
            exe=${entry%%$'\t'*}
            pkg_dir=${entry#*$'\t'}
            # A binary is TARGET-HASH (a target's dashes are underscores in it).
            name=$(basename "$exe")
            [ -z "$only" ] || [ "${name%-*}" = "${only//-/_}" ] || continue
            [ -z "$only_pkg" ] || [ "$(basename "$pkg_dir")" = "$only_pkg" ] || continue
            start=$SECONDS
            ran=$((ran + 1))
            echo "     Running $(basename "$exe") (from $pkg_dir)"
            if ! (cd "$pkg_dir" && CARGO_MANIFEST_DIR="$pkg_dir" "$exe" "$@"); then
                rc=1
                failed+=("$(basename "$exe")")
            fi
            echo "test-binaries.sh: $(basename "$exe") took $((SECONDS - start)) s"
        done
        if [ -n "$only" ] && [ "$ran" -eq 0 ]; then
            echo "test-binaries.sh: no test target ${only_pkg:+$only_pkg:}$only in $which" >&2
            exit 2
        fi
        if [ "$rc" -ne 0 ]; then
            echo "test-binaries.sh: failed: ${failed[*]}" >&2
        fi
        exit "$rc"
        ;;
    *) usage ;;
esac
