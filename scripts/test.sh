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

# The Python package (crates/vdev-py) in a virtual environment of its own: built and installed
# with pip through maturin, then its pytest suite, which also runs the vdev command (built here).
cargo build -q -p vdev-cli
venv=target/py-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check maturin pytest mypy
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps ./crates/vdev-py
"$venv/bin/mypy" --strict --no-error-summary crates/vdev-py/python/vdev
# -rs: a skip says why; exit status 5 (no tests collected) fails like any other non-zero status.
(cd crates/vdev-py/tests && "../../../$venv/bin/pytest" -q -rs -p no:cacheprovider .)
