"""The package built with the ``libvirt`` feature, against a real libvirtd (the one the libvirt
driver's Rust tests start, run here through its ``libvirtd`` example; QEMU under TCG, no guest
OS), with ``virsh`` as the independent checker: attach, list, update and detach with scopes, a
stopped domain, typed errors that leave both definitions byte-identical, a removal the guest
never completes seen pending by another process, a document applied and exported, and the
blocking calls releasing the GIL.

scripts/test.sh runs this file in a build with the feature (target/py-venv-libvirt); in a build
without it only the first test runs, checking that a ``libvirt+`` URI says how to get the driver.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

import vdev
from conftest import ROOT, WAIT, skip_or_fail

HAS_LIBVIRT = any(d.name == "libvirt" for d in vdev.drivers())
needs_libvirt = pytest.mark.skipif(
    not HAS_LIBVIRT,
    reason="this build has no libvirt driver: scripts/test.sh runs this file again in one that has",
)


def test_a_libvirt_uri_says_how_to_get_the_driver_or_works() -> None:
    if HAS_LIBVIRT:
        # libvirt's own in-process test driver: no daemon needed.
        with vdev.connect("libvirt+test:///default") as c:
            assert [d.name for d in c.domains()] == ["test"]
    else:
        with pytest.raises(vdev.NoDriver) as e:
            vdev.connect("libvirt+test:///default")
        assert "feature `libvirt`" in str(e.value)
        assert "libvirt-dev" in str(e.value)


class Lab:
    """A libvirtd of the tests' own, with domains ``run`` (running) and ``off`` (defined)."""

    def __init__(self) -> None:
        exe = os.environ.get("VDEV_LIBVIRTD")
        target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        path = pathlib.Path(exe) if exe else target / "debug" / "examples" / "libvirtd"
        if not path.exists():
            skip_or_fail(
                f"the libvirtd example is not built ({path}): "
                "cargo build -p vdev-driver-libvirt --example libvirtd"
            )
        self.proc = subprocess.Popen(
            [str(path), "run", "off:off"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = within(120.0, self.proc.stdout.readline)
        info = json.loads(line or "{}")
        if "missing" in info or not line:
            self.close()
            skip_or_fail(info.get("missing", "the libvirtd example printed nothing"))
        self.uri: str = info["uri"]
        self.libvirt_uri: str = info["libvirt_uri"]
        self.images = pathlib.Path(info["images"])

    def image(self, name: str) -> str:
        p = self.images / name
        with open(p, "wb") as f:
            f.truncate(1 << 20)
        return str(p)

    def virsh(self, *args: str) -> str:
        out = subprocess.run(
            ["virsh", "-c", self.libvirt_uri, *args],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        )
        return out.stdout

    def dumpxml(self, domain: str) -> tuple[str, str]:
        return self.virsh("dumpxml", domain), self.virsh("dumpxml", "--inactive", domain)

    def sources(self, domain: str, inactive: bool = False) -> list[str]:
        args = ["domblklist", domain, "--details"] + (["--inactive"] if inactive else [])
        rows = self.virsh(*args).splitlines()[2:]
        return [r.split()[-1] for r in rows if r.strip()]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def within(seconds: float, work):  # type: ignore[no-untyped-def]
    """`work()` on a thread, waited for at most `seconds`."""
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(work()), daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"waited {seconds} s for the libvirtd example")
    return out[0]


@pytest.fixture(scope="module")
def lab():  # type: ignore[no-untyped-def]
    if not HAS_LIBVIRT:
        pytest.skip("no libvirt driver in this build")
    lab = Lab()
    yield lab
    lab.close()


@needs_libvirt
def test_attach_update_detach_checked_by_virsh(lab: Lab) -> None:
    img = lab.image("py-a.raw")
    with vdev.connect(lab.uri) as c:
        run = c.domain("run")
        assert run.state == "running" and run.uuid
        ref = c.attach(run, "disk", source=img, bus="scsi")
        assert ref.startswith("ua-disk-")
        assert img in lab.sources("run")
        assert img not in lab.sources("run", inactive=True), "live only by default"
        listed = {d.ref: d for d in c.devices(run, "disk")}
        assert listed[ref].attrs["source"] == img
        c.detach(run, "disk", ref)
        assert img not in lab.sources("run")

        # Both scopes, then the stored configuration only.
        ref = c.attach(run, "disk", source=img, scope="both")
        assert img in lab.sources("run") and img in lab.sources("run", inactive=True)
        c.detach(run, "disk", ref, scope="persistent")
        assert img in lab.sources("run") and img not in lab.sources("run", inactive=True)
        c.detach(run, "disk", ref, scope="live")
        assert img not in lab.sources("run")

        # A NIC's link, changed in place (USB: its removal needs no guest).
        nic = c.attach(run, "network", netdev="user", model="usb-net")
        c.update(run, "network", nic, link="down")
        assert "link state='down'" in lab.virsh("dumpxml", "run")
        c.update(run, "network", nic, {"link": "up"})
        assert "link state='down'" not in lab.virsh("dumpxml", "run")
        c.detach(run, "network", nic)


@needs_libvirt
def test_a_stopped_domain_changes_in_its_stored_configuration(lab: Lab) -> None:
    img = lab.image("py-off.raw")
    with vdev.connect(lab.uri) as c:
        off = c.domain("off")
        assert off.state == "shut-off" and off.id is None
        ref = c.attach(off, "disk", source=img)
        assert img in lab.sources("off", inactive=True)
        [d] = [d for d in c.devices(off, "disk") if d.ref == ref]
        assert d.state == "configured"
        c.detach(off, "disk", ref)
        assert img not in lab.sources("off", inactive=True)


@needs_libvirt
def test_bad_input_raises_typed_errors_and_changes_nothing(lab: Lab) -> None:
    img = lab.image("py-bad.raw")
    before = lab.dumpxml("run")
    with vdev.connect(lab.uri) as c:
        with pytest.raises(vdev.InvalidAttribute) as e:
            c.attach("run", "disk", source="/nonexistent/py.raw")
        assert "/nonexistent/py.raw" in str(e.value)
        with pytest.raises(vdev.InvalidAttribute):
            c.attach("run", "disk", source=img, bus="sometimes")
        with pytest.raises(vdev.DomainNotFound):
            c.attach("nosuchdomain", "disk", source=img)
        with pytest.raises(vdev.DeviceNotFound):
            c.detach("run", "disk", "ua-disk-nosuch")
        ref = c.attach("run", "disk", source=img, target="sdz")
        try:
            with pytest.raises(vdev.DeviceExists):
                c.attach("run", "disk", source=lab.image("py-bad2.raw"), target="sdz")
        finally:
            c.detach("run", "disk", ref)
    with vdev.connect(lab.uri, readonly=True) as ro:
        with pytest.raises(vdev.ReadOnly):
            ro.attach("run", "disk", source=img)
    assert lab.dumpxml("run") == before, "live and stored XML byte-identical"


@needs_libvirt
def test_a_removal_the_guest_never_completes_is_pending_for_every_process(lab: Lab) -> None:
    # A virtio disk on a domain whose guest never answers: libvirt would say "detached".
    img = lab.image("py-pending.raw")
    with vdev.connect(lab.uri) as c:
        ref = c.attach("run", "disk", source=img, bus="virtio")
        with pytest.raises(vdev.RemovalPending):
            c.detach("run", "disk", ref, timeout=1.0)
        assert img in lab.sources("run"), "still there, as virsh sees it"
    # Another process sees it pending too (the record is in libvirt's domain metadata).
    code = (
        "import json, sys, vdev\n"
        "with vdev.connect(sys.argv[1]) as c:\n"
        "    print(json.dumps({d.ref: d.state for d in c.devices('run', 'disk')}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, lab.uri],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    assert json.loads(out.stdout)[ref] == "removal-pending"


@needs_libvirt
def test_apply_and_export(lab: Lab) -> None:
    img = lab.image("py-doc.raw")
    doc = {"domains": {"run": {"devices": [{"type": "disk", "attrs": {"source": img, "target": "sdy"}}]}}}
    with vdev.connect(lab.uri) as c:
        plan = c.plan(doc)
        assert [ch.op for ch in plan] == ["add"]
        report = c.apply(doc)
        assert report.changed and report.error is None
        assert img in lab.sources("run")
        assert c.plan(doc) == []
        exported = c.export("run")
        assert any(d["attrs"].get("source") == img for d in exported["domains"]["run"]["devices"])
        absent = {"domains": {"run": {"devices": [{"type": "disk", "state": "absent", "attrs": {"source": img, "target": "sdy"}}]}}}
        assert c.apply(absent).changed
        assert img not in lab.sources("run")


@needs_libvirt
def test_a_slow_call_releases_the_gil(lab: Lab) -> None:
    # A detach that waits a second for a guest that never answers, while another thread runs
    # Python and notes the time of each step: with the GIL held, no step could fall inside.
    img = lab.image("py-gil.raw")
    stop = threading.Event()
    steps: list[float] = []

    def count() -> None:
        while not stop.is_set() and len(steps) < 1_000_000:
            steps.append(time.monotonic())

    with vdev.connect(lab.uri) as c:
        ref = c.attach("run", "disk", source=img, bus="virtio")
        t = threading.Thread(target=count, daemon=True)
        t.start()
        start = time.monotonic()
        try:
            with pytest.raises(vdev.RemovalPending):
                c.detach("run", "disk", ref, timeout=1.0)
        finally:
            end = time.monotonic()
            stop.set()
            t.join(WAIT)
    inside = [s for s in steps if start + 0.2 < s < end - 0.2]
    assert len(inside) > 100, f"{len(inside)} steps of the other thread during the wait"
