"""attach/list/detach on a real QEMU (no guest OS), checked by an independent raw QMP client."""

from __future__ import annotations

import json
import os
import shutil
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
        yield tmp_path, client
        client.close()
    finally:
        proc.kill()
        proc.wait(WAIT)


def test_attach_list_detach_on_real_qemu(vm, tmp_path):
    vmdir, raw = vm
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
