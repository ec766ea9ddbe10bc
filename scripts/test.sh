#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then runs every test.
# Under CI (CI=true) a missing real component (QEMU, the Xen lab) is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-test-deps.sh
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
# libvdev.a linked into a C program in a release build (where the linker drops what nothing names).
cargo test --release -p vdev-capi --test c_programs readme_example_static
