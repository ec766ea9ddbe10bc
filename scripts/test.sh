#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then runs every test.
# Under CI (CI=true) a missing real component (QEMU, the Xen lab) is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-test-deps.sh
cargo build --workspace --all-targets

# The Xen driver's tests run against a real Xen 4.17 booted in QEMU (tests/xenlab): build its
# images (cached), bring it up for the test run and down afterwards, also when tests fail.
tests/xenlab/xenlab build
trap 'tests/xenlab/xenlab down >/dev/null 2>&1 || true' EXIT
lab_env=$(tests/xenlab/xenlab up)
set -a
eval "$lab_env"
set +a

cargo test --workspace --no-fail-fast
# libvdev.a linked into a C program in a release build (where the linker drops what nothing names).
cargo test --release -p vdev-capi --test c_programs readme_example_static
