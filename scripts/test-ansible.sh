#!/usr/bin/env bash
# The Ansible collection vdev.hotplug (ansible/ansible_collections/vdev/hotplug), as the test
# command's stage "the Ansible collection" runs it: ansible-core from PyPI in a virtual
# environment of its own (target/ansible-venv) with vdev's wheel in it (the one the Python stage
# built, target/wheels, or VDEV_WHEEL); `ansible-test sanity` on a clean copy of the collection
# (a venv under tests/output fails its symlinks test); `ansible-test units`; then the fleet
# integration test (tests/integration/targets/fleet: real sshds and QEMUs, and the Xen lab when
# its variables are set, as scripts/test.sh sets them). Runs alone too, once a wheel exists.
#
#   scripts/test-ansible.sh [all]   all of the above
#   scripts/test-ansible.sh hosts   all but the fleet test's Xen lab part (needs no lab)
#   scripts/test-ansible.sh lab     only the fleet test's Xen lab part
# scripts/test.sh runs `hosts` while the lab's own tests still run and `lab` after them.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
case "$part" in
    all) select=() ;;
    hosts) select=(-k "not xen") ;;
    lab) select=(-k xen) ;;
    *)
        echo "test-ansible: unknown part '$part': give all, hosts or lab" >&2
        exit 2
        ;;
esac
root=$PWD
coll=ansible/ansible_collections/vdev/hotplug

wheel=${VDEV_WHEEL:-}
if [ -z "$wheel" ]; then
    wheel=$(ls -t target/wheels/vdev-*.whl 2>/dev/null | head -1 || true)
fi
if [ -z "$wheel" ] || [ ! -f "$wheel" ]; then
    echo "test-ansible: no vdev wheel (target/wheels/vdev-*.whl or VDEV_WHEEL): run the Python stage of scripts/test.sh first" >&2
    exit 1
fi
wheel=$(readlink -f "$wheel")

venv=target/ansible-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# ansible-core 2.19 is the last series for Python 3.11 (2.20 needs 3.12).
"$venv/bin/pip" install -q --disable-pip-version-check 'ansible-core>=2.19,<2.20' pytest pytest-timeout pytest-xdist pytest-mock
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$wheel"

# ansible-test bootstraps pip in its venvs with a script it downloads from a host this machine
# kind cannot reach; it takes a cached copy first: an offline stand-in (ansible/tools).
mkdir -p "$HOME/.ansible/test/cache"
cp ansible/tools/get_pip_offline.py "$HOME/.ansible/test/cache/get_pip_24_2.py"

if [ "$part" != lab ]; then
    # A clean copy outside the git tree (ansible-test would list only tracked files inside it).
    copy=$(mktemp -d /tmp/vdev-ansible-test.XXXXXX)
    trap 'rm -rf "$copy"' EXIT
    mkdir -p "$copy/ansible_collections/vdev"
    cp -r "$coll" "$copy/ansible_collections/vdev/hotplug"
    rm -rf "$copy/ansible_collections/vdev/hotplug/tests/output"
    find "$copy" -name __pycache__ -type d -prune -exec rm -rf {} +
    (
        cd "$copy/ansible_collections/vdev/hotplug"
        "$root/$venv/bin/ansible-test" sanity --venv --python 3.11 --color no
        echo "test-ansible: sanity passed after $SECONDS s"
        "$root/$venv/bin/ansible-test" units --local --python 3.11 --requirements --color no
        echo "test-ansible: units passed after $SECONDS s"
    )
fi

# The fleet: several managed hosts at once, and the Xen lab's Domain-0 over ssh (its tests are
# the ones named `xen`).
VDEV_ROOT=$root VDEV_WHEEL=$wheel PATH="$root/$venv/bin:$PATH" \
    "$coll/tests/integration/targets/fleet/runme.sh" "${select[@]}"
echo "test-ansible: integration passed after $SECONDS s"
