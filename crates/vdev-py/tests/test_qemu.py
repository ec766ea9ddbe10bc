"""attach/list/detach on a real QEMU (no guest OS), checked by an independent raw QMP client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

import vdev
from conftest import WAIT, skip_or_fail

QEMU = "qemu-system-x86_64"


class RawQmp:
    """A minimal QMP client on QEMU's second socket, independent of vdev."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        self.read()  # greeting
        self.cmd("qmp_capabilities")

    def read(self) -> dict:
        line = self.file.readline()
        if not line:
            raise EOFError("QMP closed")
        return json.loads(line)

    def cmd(self, name: str, **args):
        self.file.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.file.flush()
        while True:
            m = self.read()
            if "return" in m:
                return m["return"]
            if "error" in m:
                raise RuntimeError(m["error"])

    def device_ids(self) -> set[str]:
        ids: set[str] = set()
        for p in self.cmd("qom-list", path="/machine/peripheral"):
            if p["type"].startswith("child<"):
                ids.add(p["name"])
        return ids

    def close(self) -> None:
        self.sock.close()


def wait_for(path: str) -> None:
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)


@pytest.fixture
def vm(tmp_path):
    if shutil.which(QEMU) is None:
        skip_or_fail(f"{QEMU} is not installed")
    sock, raw = tmp_path / "vm.qmp", tmp_path / "raw.sock"
    proc = subprocess.Popen(
        [
            QEMU,
            "-name", "pyvm",
            "-machine", "q35,accel=kvm:tcg",
            "-nodefaults", "-display", "none", "-m", "128", "-S",
            "-qmp", f"unix:{sock},server=on,wait=off",
            "-qmp", f"unix:{raw},server=on,wait=off",
            "-device", "pcie-root-port,id=rp1,chassis=1,slot=1",
            "-device", "virtio-scsi-pci,id=scsi0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(str(raw))
        wait_for(str(sock))
        client = RawQmp(str(raw))
        yield tmp_path, client, proc
        client.close()
    finally:
        proc.kill()
        proc.wait(WAIT)


def test_attach_list_detach_on_real_qemu(vm, tmp_path):
    vmdir, raw, _ = vm
    img = tmp_path / "data.img"
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    with vdev.connect(f"qemu://{vmdir}/vm.qmp") as conn:
        (dom,) = conn.domains()
        assert dom.name == "pyvm"
        before = raw.device_ids()
        ref = conn.attach(dom, "disk", source=str(img), format="raw")
        assert ref in raw.device_ids() - before
        (d,) = [d for d in conn.devices("pyvm", "disk") if d.ref == ref]
        assert d.attrs["source"] == str(img) and d.state == "connected"
        conn.detach(dom, "disk", ref, timeout=WAIT)
        assert ref not in raw.device_ids()
        assert ref not in [d.ref for d in conn.devices(dom, "disk")]


def inserted_file(raw: RawQmp, ref: str) -> str | None:
    """The file in the drive of device ``ref`` (query-block), or None when its tray is empty."""
    for b in raw.cmd("query-block"):
        if b.get("qdev", "").endswith(ref) or b.get("device") == ref:
            ins = b.get("inserted")
            return ins["file"] if ins else None
    raise AssertionError(f"no drive for {ref} in query-block")


def test_update_changes_a_medium_and_a_link_on_real_qemu(vm, tmp_path):
    """update() through the Python package: a CD-ROM's medium and a NIC's link, each checked by
    the raw client (query-block for the medium, the QOM marker that records a link down)."""
    vmdir, raw, _ = vm
    a, b = tmp_path / "a.iso", tmp_path / "b.iso"
    for f in (a, b):
        with open(f, "wb") as out:
            out.truncate(1 << 20)
    with vdev.connect(f"qemu://{vmdir}/vm.qmp") as conn:
        (dom,) = conn.domains()
        cd = conn.attach(dom, "disk", media="cdrom", source=str(a))
        assert inserted_file(raw, cd) == str(a)
        conn.update(dom, "disk", cd, source=str(b))
        assert inserted_file(raw, cd) == str(b)
        (d,) = [d for d in conn.devices(dom, "disk") if d.ref == cd]
        assert d.attrs["source"] == str(b)
        conn.update(dom, "disk", cd, source="")  # eject
        assert inserted_file(raw, cd) is None
        with pytest.raises(vdev.InvalidAttribute):
            conn.update(dom, "disk", cd, media="disk")  # not updatable: refused, nothing changed
        assert inserted_file(raw, cd) is None

        nic = conn.attach(dom, "network")
        markers = lambda: {p["name"] for p in raw.cmd("qom-list", path="/objects")}  # noqa: E731
        assert f"vdev-link-down.{nic}" not in markers()
        conn.update(dom, "network", nic, link="down")
        assert f"vdev-link-down.{nic}" in markers()
        (n,) = [n for n in conn.devices(dom, "network") if n.ref == nic]
        assert n.attrs["link"] == "down"
        conn.update(dom, "network", nic, link="up")
        assert f"vdev-link-down.{nic}" not in markers()


def test_a_stopped_qemu_is_a_timeout_not_a_hang(vm):
    """A QEMU that stops answering (SIGSTOP) makes a call fail with vdev.Timeout after the URI's
    timeout, and the connection works again once QEMU runs."""
    vmdir, _, proc = vm
    with vdev.connect(f"qemu://{vmdir}/vm.qmp?timeout=1s") as conn:
        (dom,) = conn.domains()
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(vdev.Timeout) as e:
                conn.devices(dom)
            assert e.value.code == "timeout"
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    with vdev.connect(f"qemu://{vmdir}/vm.qmp") as conn:
        assert [d.name for d in conn.domains()] == ["pyvm"]


def test_an_unreachable_ssh_host_is_a_remote_error():
    """qemu+ssh:// to a port where nothing listens: the real ssh client fails, vdev.Remote."""
    if shutil.which("ssh") is None:
        skip_or_fail("the OpenSSH client is not installed")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"qemu+ssh://127.0.0.1:{port}/run/vm.qmp?timeout=10s"
    with pytest.raises(vdev.Remote) as e:
        vdev.connect(uri).domains()
    assert e.value.code == "remote"
    assert str(port) in str(e.value) or "127.0.0.1" in str(e.value)

