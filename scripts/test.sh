#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then runs every test.
# Under CI (`CI` set, not `false` or `0`) a missing real component (QEMU, the Xen lab, the test
# guest) is a failure, never a skip; elsewhere each skip is listed at the end with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Under CI the run starts from a new clone: incremental compilation's data (about 2 GB) would
# cost time and disk and never be reused (docs/design/0019-test-command.md).
case "${CI:-}" in "" | false | 0) ;; *) export CARGO_INCREMENTAL=0 ;; esac

# Where the time goes: each stage's seconds, printed as it ends and listed in the summary.
stage_start=$SECONDS
stages=()
stage() {
    stages+=("$(printf '%5d s  %s' $((SECONDS - stage_start)) "$1")")
    echo "test.sh: $1 took $((SECONDS - stage_start)) s"
    stage_start=$SECONDS
}

scripts/install-test-deps.sh
stage "installing the test dependencies"

# Work started in the background is stopped, as a process group, if this script ends first.
bg_pids=()
stop_background() {
    local p
    for p in "${bg_pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done
}
trap stop_background EXIT
mkdir -p target

# The Python package's extension (crates/vdev-py) is compiled both by the workspace's builds and
# by maturin (the Python stages below), in the same target directory. maturin gives pyo3's build
# scripts the interpreter it builds for and two variables of its own; a cargo run with other
# values compiles pyo3 and everything above it again, and so does the next maturin build. So
# every cargo run here gives the values maturin gives for the Python stage's interpreter (the
# interpreter of the venv made here; both wheels are built with it). A value that differs from
# maturin's costs only that compile.
venv=target/py-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
export PYO3_PYTHON="$PWD/$venv/bin/python3" PYO3_BUILD_EXTENSION_MODULE=1
PYO3_ENVIRONMENT_SIGNATURE=$("$PYO3_PYTHON" -c 'import sys; v = sys.version_info; print(f"{sys.implementation.name}-{v.major}.{v.minor}-{64 if sys.maxsize > 2**32 else 32}bit")')
export PYO3_ENVIRONMENT_SIGNATURE

# Fuzzing (fuzz/, cargo-fuzz on the nightly toolchain this machine kind has beside stable): the
# toolchain is checked now, so that its absence fails at once rather than after the other
# stages, and cargo-fuzz (about 3 minutes to compile on a fresh machine) is installed in the
# background while the lab's images are built and the workspace compiles.
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "test.sh: the fuzz targets need the nightly toolchain beside stable (rustup toolchain list shows none)" >&2
    exit 1
fi
cargo_fuzz_pid=
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    set -m
    # In cargo's own temporary folder, even if CARGO_TARGET_DIR names the workspace's.
    env -u CARGO_TARGET_DIR cargo install -q --locked cargo-fuzz >target/cargo-fuzz-install.log 2>&1 &
    cargo_fuzz_pid=$!
    set +m
    bg_pids+=("$cargo_fuzz_pid")
fi

# The Xen driver's tests run against a real Xen 4.17 booted in QEMU (tests/xenlab): build its
# images (cached), then boot it while the workspace builds, and take it down afterwards, also
# when tests fail. The libvirt driver's tests/xen.rs (in the Rust tests below) starts libvirt's
# Xen driver in its Domain-0 itself (`xenlab libvirtd`), from the environment exported here.
tests/xenlab/xenlab build
stage "the Xen lab's images"
trap 'stop_background; tests/xenlab/xenlab down >/dev/null 2>&1 || true' EXIT
tests/xenlab/xenlab up >target/xenlab.env 2>target/xenlab-up.log &
lab_pid=$!
cargo build --workspace --all-targets
stage "the workspace build"
if ! wait "$lab_pid"; then
    cat target/xenlab-up.log >&2
    echo "test.sh: the Xen lab did not come up (its log is above)" >&2
    exit 1
fi
set -a
# shellcheck disable=SC1091
. target/xenlab.env
set +a
stage "waiting for the Xen lab to come up"

# Tests that skip say why in this file, printed in the summary below (cargo alone would show them
# as `ok`): for want of a real part (never under CI, where that is a failure), or a conformance
# check a driver's tests declare skipped with a reason.
export VDEV_SKIP_LOG="$PWD/target/vdev-skips.txt"
mkdir -p target && : > "$VDEV_SKIP_LOG"
summary() {
    printf 'Time by stage:\n'
    printf '  %s\n' "${stages[@]}"
    if [ -s "$VDEV_SKIP_LOG" ]; then
        echo "SKIPPED ($(wc -l < "$VDEV_SKIP_LOG") tests; each line says why: a missing real part, or a check a driver's tests declare skipped):"
        sed 's/^/  /' "$VDEV_SKIP_LOG"
    else
        echo "skipped: none"
    fi
}
# Every Rust test binary of the workspace is built once (scripts/test-binaries.sh: one
# `cargo test --workspace --no-run`, which the workspace build above has mostly done) and run
# directly. Those that need the Xen lab (scripts/test-xenlab.sh) run beside the stages below, up
# to the Ansible collection's Xen lab part, which uses the lab too: they spend most of their time
# waiting for the lab's guests, the stages below on this machine's cores. They run in the background in a process
# group of their own (job control on: stopped as a group if this script ends first); their
# output is printed when they end.
scripts/test-xenlab.sh build
lab_log=target/xenlab-tests/output.log
set -m
scripts/test-xenlab.sh run >"$lab_log" 2>&1 &
lab_tests_pid=$!
set +m
bg_pids+=("$lab_tests_pid")
lab_tests_start=$SECONDS
trap 'stop_background; summary; tests/xenlab/xenlab down >/dev/null 2>&1 || true' EXIT
stage "building the test binaries"

# Every other Rust test, and the doc tests. One test of libvdev's uses the lab's domU too: it
# runs after the lab's tests (below).
xen_c_test=c_proposal_calls_on_the_xen_lab
# libvdev's C tests build the library with cargo: with the arguments of the build above, so that
# cargo finds it done (crates/vdev-capi/tests/c_programs.rs says why).
ws_build="--workspace --all-targets"
rest_rc=0
VDEV_TEST_LIBVDEV_BUILD=$ws_build scripts/test-binaries.sh run rest --skip "$xen_c_test" || rest_rc=$?
cargo test --workspace --doc --no-fail-fast || rest_rc=1
[ "$rest_rc" -eq 0 ] || exit 1
stage "the Rust tests that need no lab"
# The libvirt driver behind its cargo feature (off by default: it links libvirt through the
# LGPL-2.1 `virt` crate): the workspace's test binaries built a second time with the feature on
# in the facade, the vdev command and libvdev (the whole workspace, so that only the crates the
# feature changes are rebuilt: scripts/test-binaries.sh says why), and their tests run: the
# facade's, the vdev command's against a libvirtd, and a C program through libvirt with libvdev
# built with it, run plainly and under valgrind.
lv=(--features "vdev/libvirt,vdev-cli/libvirt,vdev-capi/libvirt")
scripts/test-binaries.sh "${lv[@]}" build
lv_rc=0
for t in vdev:vdev vdev:libvirt_feature vdev-cli:libvirt; do
    scripts/test-binaries.sh "${lv[@]}" run "rest/$t" || lv_rc=1
done
cargo test -q --workspace --doc "${lv[@]}" -- crates/vdev/src/ || lv_rc=1
VDEV_TEST_LIBVDEV_BUILD="$ws_build ${lv[*]}" \
    scripts/test-binaries.sh "${lv[@]}" run rest/vdev-capi:c_programs c_calls_through_libvirt || lv_rc=1
[ "$lv_rc" -eq 0 ] || exit 1
stage "the libvirt feature"
# libvdev.a linked into a C program in a release build (where the linker drops what nothing names):
# the library alone built in release (the test binary is the one above).
VDEV_TEST_LIBVDEV_PROFILE=release scripts/test-binaries.sh run rest/c_programs readme_example_static c_every_driver_is_linked
stage "the static library in a release build"

# The Python package (crates/vdev-py) in a virtual environment of its own: built and installed
# with pip through maturin, then its pytest suite, which also runs the vdev command: the one of
# the first build (the stage above left one with libvirt in target/debug; this build has nothing
# to compile and puts that one back).
cargo build -q --workspace --all-targets
"$venv/bin/pip" install -q --disable-pip-version-check maturin pytest pytest-timeout mypy
# The dev profile in the workspace's target directory: the workspace build above already compiled
# most of it (the release build's speed belongs to the benchmarks, not to the tests); stripped,
# since the wheel is also what the Ansible stage installs on its managed hosts (target/wheels).
rm -f target/wheels/vdev-*.whl
CARGO_TARGET_DIR="$PWD/target" MATURIN_PEP517_ARGS="--profile dev --strip" \
    "$venv/bin/pip" wheel -q --disable-pip-version-check --no-deps -w target/wheels ./crates/vdev-py
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels/vdev-*.whl
"$venv/bin/mypy" --strict --no-error-summary crates/vdev-py/python/vdev
# -rs: a skip says why; exit status 5 (no tests collected) fails like any other non-zero status.
(cd crates/vdev-py/tests && "../../../$venv/bin/pytest" -q -rs -p no:cacheprovider .)
stage "the Python package and its tests"

# The package built with the libvirt feature, installed in a venv of its own (the wheel above,
# which the Ansible stage installs on managed hosts, stays without it): test_libvirt.py against a
# libvirtd of the tests' own, which the libvirt driver's `libvirtd` example starts. Built by the
# first venv's pip, for the same interpreter as the first wheel (see PYO3_PYTHON above).
venv_lv=target/py-venv-libvirt
[ -x "$venv_lv/bin/python" ] || python3 -m venv "$venv_lv"
"$venv_lv/bin/pip" install -q --disable-pip-version-check pytest pytest-timeout
rm -rf target/wheels-libvirt
CARGO_TARGET_DIR="$PWD/target" MATURIN_PEP517_ARGS="--profile dev --features libvirt" \
    "$venv/bin/pip" wheel -q --disable-pip-version-check --no-deps -w target/wheels-libvirt ./crates/vdev-py
"$venv_lv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels-libvirt/vdev-*.whl
# The libvirt driver's `libvirtd` example is the first build's (target/debug/examples).
(cd crates/vdev-py/tests && "../../../$venv_lv/bin/pytest" -q -rs -p no:cacheprovider test_libvirt.py)
stage "the Python package with the libvirt feature"

# The fuzz targets: built here, then each run for a short, bounded time from its seed corpus in
# the background, one after the other, beside the stages below (which, once the lab's tests have
# ended, leave a core free); a crash, a leak or a timeout fails the test command (libFuzzer exits
# non-zero and leaves the input under fuzz/artifacts/). Not at a lower priority: under `nice`
# `capi`, whose every call crosses to the connection's runtime thread and back, ran 20 times
# fewer inputs beside the Ansible stage (run M3, design 0019).
if [ -n "$cargo_fuzz_pid" ]; then
    if ! wait "$cargo_fuzz_pid"; then
        cat target/cargo-fuzz-install.log >&2
        echo "test.sh: cargo install cargo-fuzz failed (its output is above)" >&2
        exit 1
    fi
    stage "waiting for cargo-fuzz's install"
fi
(cd fuzz && cargo +nightly fuzz build -O)
stage "the fuzz targets' build"
fuzz_seconds=${VDEV_FUZZ_SECONDS:-20}
fuzz_log=target/fuzz-runs.log
rm -f target/fuzz-runs.seconds
fuzz_start=$SECONDS
set -m
(
    cd fuzz
    for t in $(cargo +nightly fuzz list); do
        mkdir -p "corpus/$t"
        log="../target/fuzz-$t.log"
        if ! cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
            -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 >"$log" 2>&1; then
            tail -40 "$log"
            echo "fuzz: $t found a problem (input saved under fuzz/artifacts/$t)"
            exit 1
        fi
        echo "fuzz: $t: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') runs in ${fuzz_seconds} s, no crash"
    done
    # Their own length (the summary's line is written when they are waited for, later).
    echo "$((SECONDS - fuzz_start))" >../target/fuzz-runs.seconds
) >"$fuzz_log" 2>&1 &
fuzz_pid=$!
set +m
bg_pids+=("$fuzz_pid")

# The Ansible collection vdev.hotplug (ansible/): ansible-core in a venv of its own with the wheel
# built above; ansible-test sanity and units; a playbook against several managed hosts (a real
# sshd and QEMU each) and the Xen lab's Domain-0 (scripts/test-ansible.sh). All but the Xen
# lab's part now, while the lab's own tests may still run (on a warm rerun they are what this
# script waits for, beside one core left free); the lab's part after them.
VDEV_WHEEL=$(ls target/wheels/vdev-*.whl)
export VDEV_WHEEL
scripts/test-ansible.sh hosts
stage "the Ansible collection, all but its Xen lab part"

# The lab's tests, run beside the stages above: their output, and whether they passed.
lab_rc=0
wait "$lab_tests_pid" || lab_rc=$?
cat "$lab_log"
stages+=("$(printf '%5d s  %s' $((SECONDS - lab_tests_start)) "the tests in the Xen lab (beside the stages above)")")
if [ "$lab_rc" -ne 0 ]; then
    echo "test.sh: tests in the Xen lab failed (their output is above)" >&2
    exit 1
fi
# libvdev's C program against the lab's domU, which the lab's tests use while they run.
VDEV_TEST_LIBVDEV_BUILD=$ws_build scripts/test-binaries.sh run rest/c_programs --exact "$xen_c_test"
stage "waiting for the tests in the Xen lab, then libvdev's test in it"

# The Ansible collection's Xen lab part: the playbook against the lab's Domain-0.
scripts/test-ansible.sh lab
stage "the Ansible collection's Xen lab part"

# The fuzz runs, started after the fuzz build above: their output, and whether they passed.
fuzz_rc=0
wait "$fuzz_pid" || fuzz_rc=$?
cat "$fuzz_log"
stages+=("$(printf '%5d s  %s' "$(cat target/fuzz-runs.seconds 2>/dev/null || echo $((SECONDS - fuzz_start)))" "the fuzz runs (beside the stages above)")")
if [ "$fuzz_rc" -ne 0 ]; then
    echo "test.sh: a fuzz target failed (its output is above)" >&2
    exit 1
fi

