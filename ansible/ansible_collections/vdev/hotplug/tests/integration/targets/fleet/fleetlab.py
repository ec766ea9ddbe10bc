# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""A fleet of managed hosts on this machine, for the collection's integration test and benchmark.

Each host is a real OpenSSH server on loopback (its own port, host key, user key and known_hosts,
configured as the project's test sshd, vdev_conformance::sshd::Sshd) and a real QEMU (no guest OS)
with two QMP sockets: ``vm.qmp`` for vdev, ``raw.sock`` for an independent checker (the raw QMP
client of crates/vdev-py/tests/test_qemu.py). Ansible reaches the hosts through their sshds.
Everything started here is stopped by its own process id. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# The repository: VDEV_ROOT (set by the test command, since ansible-test may copy this tree), else
# the tree this file is in (ansible/ansible_collections/vdev/hotplug/tests/integration/targets/fleet).
ROOT = pathlib.Path(os.environ.get("VDEV_ROOT") or HERE.parents[7])
PY_TESTS = ROOT / "crates" / "vdev-py" / "tests"
if str(PY_TESTS) not in sys.path:
    sys.path.append(str(PY_TESTS))

from test_qemu import QEMU, RawQmp, inserted_file, wait_for  # noqa: E402  pylint: disable=wrong-import-position

__all__ = ["Fleet", "RawQmp", "inserted_file", "QEMU", "SSHD", "WAIT"]

SSHD = "/usr/sbin/sshd"
WAIT = 20.0  # seconds: every wait for a process or socket
PLAY_TIMEOUT = 600.0  # seconds: an ansible command that runs longer is killed (a hang is a failure)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A real sshd on 127.0.0.1 with its own keys and known_hosts, in ``d``."""

    def __init__(self, d: pathlib.Path) -> None:
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vdev-test", "-f", str(d / name)],
                           check=True, timeout=WAIT)
        shutil.copy(d / "user_key.pub", d / "authorized_keys")
        os.makedirs("/run/sshd", exist_ok=True)
        self.key = d / "user_key"
        self.known_hosts = d / "known_hosts"
        self.port = free_port()
        kind, key = (d / "host_key.pub").read_text().split()[:2]
        self.known_hosts.write_text("[127.0.0.1]:%d %s %s\n" % (self.port, kind, key))
        (d / "sshd_config").write_text(
            "Port %d\nListenAddress 127.0.0.1\nHostKey %s/host_key\nPidFile %s/sshd.pid\n"
            "AuthorizedKeysFile %s/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "MaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\n" % (self.port, d, d, d))
        self.proc = None
        self.start()

    def start(self) -> None:
        with open(self.dir / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("sshd did not listen on port %d: %s" % (self.port, (self.dir / "sshd.log").read_text()))
                time.sleep(0.05)

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes this sshd forked (its children, by parent pid)."""
        if self.proc is None:
            return []
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True,
                             timeout=WAIT, check=False).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        """Stop this sshd and every connection it serves (as a host that goes down does)."""
        if self.proc is None:
            return
        for pid in self.session_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait(WAIT)
        self.proc = None

    def ssh_args(self) -> str:
        return ("-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=5"
                " -o ServerAliveInterval=5 -o ServerAliveCountMax=2" % self.known_hosts)


class Vm:
    """A QEMU with no guest OS: q35, a virtio-scsi controller, two QMP sockets."""

    def __init__(self, d: pathlib.Path, name: str) -> None:
        self.dir, self.name = d, name
        self.sock, self.raw_sock = d / "vm.qmp", d / "raw.sock"
        self.proc = subprocess.Popen(
            [QEMU, "-name", name, "-machine", "q35,accel=kvm:tcg", "-nodefaults", "-display", "none", "-m", "64", "-S",
             "-qmp", "unix:%s,server=on,wait=off" % self.sock, "-qmp", "unix:%s,server=on,wait=off" % self.raw_sock,
             "-device", "pcie-root-port,id=rp1,chassis=1,slot=1", "-device", "virtio-scsi-pci,id=scsi0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(str(self.raw_sock))
        wait_for(str(self.sock))

    def raw(self) -> RawQmp:
        """A fresh independent QMP client (close it after use: QEMU serves one client per socket)."""
        return RawQmp(str(self.raw_sock))

    def device_ids(self) -> set[str]:
        c = self.raw()
        try:
            return c.device_ids()
        finally:
            c.close()

    def medium(self, ref: str):
        c = self.raw()
        try:
            return inserted_file(c, ref)
        finally:
            c.close()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(WAIT)


class Host:
    def __init__(self, base: pathlib.Path, i: int, disks: int) -> None:
        self.disks = disks
        self.name = "host%d" % i
        self.dir = base / self.name
        self.dir.mkdir(parents=True)
        self.sshd = Sshd(self.dir / "ssh")
        self.vm = Vm(self.dir, "vm%d" % i)
        for n in range(disks):
            with open(self.dir / ("data%d.raw" % n), "wb") as f:
                f.truncate(1 << 20)
        for iso in ("a", "b"):
            with open(self.dir / ("%s.iso" % iso), "wb") as f:
                f.truncate(1 << 16)


class Fleet:
    """N managed hosts, an inventory for them, and ansible commands run against it."""

    def __init__(self, base: pathlib.Path, n: int, disks: int = 4, wheel: str = "", ansible_bin: str = "") -> None:
        for tool in (QEMU, "ssh", "ssh-keygen"):
            if shutil.which(tool) is None:
                raise MissingPart("%s is not installed" % tool)
        if not os.path.exists(SSHD):
            raise MissingPart("OpenSSH's sshd is not installed (apt-get install openssh-server)")
        self.base = base
        self.wheel = wheel or os.environ.get("VDEV_WHEEL", "")
        if not self.wheel:
            raise MissingPart("VDEV_WHEEL (the vdev wheel the install role installs) is not set")
        self.bin = pathlib.Path(ansible_bin or os.path.dirname(sys.executable))
        self.hosts: list[Host] = []
        try:
            for i in range(n):
                self.hosts.append(Host(base, i, disks))
        except BaseException:
            self.close()
            raise
        self.extra_groups: dict[str, dict[str, dict[str, str]]] = {}
        self.write_inventory()

    def write_inventory(self) -> None:
        hosts = {}
        for h in self.hosts:
            hosts[h.name] = dict(
                ansible_host="127.0.0.1",
                ansible_port=h.sshd.port,
                ansible_user="root",
                ansible_ssh_private_key_file=str(h.sshd.key),
                ansible_ssh_common_args=h.sshd.ssh_args(),
                ansible_python_interpreter="/usr/bin/python3",
                vm_dir=str(h.dir),
                vm_sock=str(h.vm.sock),
                vm_name=h.vm.name,
                vdev_venv=str(h.dir / "venv"),
                data_disks=[dict(type="disk", id="data%d" % n,
                                 attrs=dict(source=str(h.dir / ("data%d.raw" % n)), format="raw", bus="scsi"))
                            for n in range(h.disks)],
            )
        inv = {"all": {"children": {"qemu": {"hosts": hosts}}, "vars": {"vdev_wheel": self.wheel}}}
        inv["all"]["children"].update({g: {"hosts": hs} for g, hs in self.extra_groups.items()})
        self.inventory = self.base / "inventory.json"
        self.inventory.write_text(json.dumps(inv, indent=1))

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(HERE.parents[6]),
            ANSIBLE_STDOUT_CALLBACK="fleet_json", ANSIBLE_CALLBACK_PLUGINS=str(HERE / "callback_plugins"),
            ANSIBLE_HOST_KEY_CHECKING="True",
            ANSIBLE_TIMEOUT="10",
            ANSIBLE_FORKS="16",
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.base / "cp"),
            ANSIBLE_LOCAL_TEMP=str(self.base / "tmp"),
            ANSIBLE_RETRY_FILES_ENABLED="False",
            ANSIBLE_PIPELINING="True",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_DEPRECATION_WARNINGS="False",
        )
        return env

    def playbook(self, name: str, *args: str, **extra_vars) -> "Run":
        """Run a playbook (a path, or the name of one beside this file)."""
        cmd = [str(self.bin / "ansible-playbook"), "-i", str(self.inventory), str(HERE / name), *args]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        return Run(cmd, self.env())

    def adhoc(self, pattern: str, module: str, args: str = "") -> "Run":
        """`ansible PATTERN -m MODULE -a ARGS` with the hosts' system Python (its output is not parsed)."""
        cmd = [str(self.bin / "ansible"), "-i", str(self.inventory), pattern, "-m", module,
               "-e", "ansible_python_interpreter=/usr/bin/python3"]
        if args:
            cmd += ["-a", args]
        return Run(cmd, self.env(), parse=False)

    def close(self) -> None:
        for h in self.hosts:
            for stop in (h.sshd.stop, h.vm.stop):
                try:
                    stop()
                except Exception:  # noqa: BLE001 - best effort: stop the rest
                    pass


class MissingPart(Exception):
    """A real part the fleet needs is not installed."""


class Run:
    """One ansible command run to its end (bounded), with its JSON result parsed."""

    def __init__(self, cmd: list[str], env: dict, parse: bool = True) -> None:
        t = time.monotonic()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=PLAY_TIMEOUT, check=False)
        self.seconds = time.monotonic() - t
        self.rc, self.stdout, self.stderr = p.returncode, p.stdout, p.stderr
        self.stats: dict = {}
        self.tasks: list = []
        if parse:
            try:
                out = json.loads(p.stdout)
            except ValueError:
                raise AssertionError("ansible printed no JSON (exit %d):\n%s\n%s" % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
            self.stats = out.get("stats", {})
            for play in out.get("plays", []):
                self.tasks += play.get("tasks", [])

    def changed(self, host: str) -> int:
        return self.stats[host]["changed"]

    def items_changed(self, host: str) -> int:
        """How many task results (loop items count one each) changed something on a host."""
        n = 0
        for t in self.tasks:
            r = t["hosts"].get(host)
            if r is not None:
                n += sum(1 for x in r.get("results", [r]) if x.get("changed"))
        return n

    def results(self, task_name: str, host: str) -> list:
        """The results of a task on a host (one per loop item)."""
        out = []
        for t in self.tasks:
            if t["task"]["name"] == task_name and host in t["hosts"]:
                r = t["hosts"][host]
                out += r.get("results", [r])
        return out

    def __repr__(self) -> str:
        failed = []
        for t in self.tasks:
            for host, r in t["hosts"].items():
                for x in r.get("results", [r]):
                    if x.get("failed") or x.get("unreachable"):
                        failed.append("%s %s: %s" % (host, t["task"]["name"], x.get("msg")))
        return "exit %d after %.1f s; stats %s; failed: %s\n%s" % (
            self.rc, self.seconds, json.dumps(self.stats), "; ".join(failed), self.stderr[-2000:])

    __str__ = __repr__
