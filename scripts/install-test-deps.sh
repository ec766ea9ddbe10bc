#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian bookworm machine of this project's kind:
# qemu-system-x86_64 and qemu-img (the QEMU driver's tests), valgrind and pkg-config (the C API's
# tests), OpenSSH server and client (the tests of +ssh URIs start their own sshd on loopback),
# libvirt-dev, libvirtd with its QEMU driver and virsh (the libvirt driver's build and tests).
# Idempotent and quiet: does nothing when everything is there. Run as root.
#
# On a fresh machine qemu-utils 10.0 from backports is preinstalled; installing qemu-system-x86
# (7.2) alone then removes it (version conflict) and leaves no qemu-img. So both are installed
# together at the same bookworm version, downgrading qemu-utils where needed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
updated=
update() { [ -n "$updated" ] || { apt-get update -qq >/dev/null; updated=1; }; }

if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1; then
    update
    version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        echo "install-test-deps: no qemu-system-x86 package is available from apt" >&2
        exit 1
    fi
    apt-get install -y -qq --no-install-recommends --allow-downgrades \
        "qemu-system-x86=$version" "qemu-utils=$version" >/dev/null
fi

need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# A real OpenSSH server and client for the tests of +ssh URIs (vdev_conformance::sshd).
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
# ss (iproute2): QEMU tests wait until a request sits unread in QEMU's socket.
command -v ss >/dev/null 2>&1 || need+=(iproute2)
# The libvirt driver: libvirt's headers to build it (the `virt` crate finds them with
# pkg-config), and a libvirtd with its QEMU driver and virsh, which its tests start and check with.
pkg-config --exists libvirt 2>/dev/null || need+=(libvirt-dev)
[ -x /usr/sbin/libvirtd ] || need+=(libvirt-daemon)
[ -e /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so ] \
    || need+=(libvirt-daemon-driver-qemu)
command -v virsh >/dev/null 2>&1 || need+=(libvirt-clients)
# libvirt's ssh transport runs `nc -U SOCKET` at the far end to reach a libvirtd's own socket.
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
# The Ansible collection's tests: its install role makes a venv with the system Python on each
# managed host (python3-venv), and the fleet test stops one host's sshd by process id (procps).
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v pkill >/dev/null 2>&1 && command -v ps >/dev/null 2>&1 || need+=(procps)
# ansible-test sanity's shellcheck test (it skips the test, with a warning, without it).
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
if [ ${#need[@]} -gt 0 ]; then
    update
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null \
    && command -v valgrind >/dev/null && command -v pkg-config >/dev/null \
    && [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ss >/dev/null \
    && pkg-config --exists libvirt && [ -x /usr/sbin/libvirtd ] && command -v virsh >/dev/null \
    && command -v nc >/dev/null && /usr/bin/python3 -c 'import ensurepip, venv' && command -v pkill >/dev/null \
    && command -v shellcheck >/dev/null
