"""The mock speaking a real driver's language (``like=``) and the guest's knobs, from Python:
the same inputs give QEMU's, Xen's and libvirt's attributes, references and error kinds, and
bad input changes nothing."""

from __future__ import annotations

import pathlib

import pytest

import vdev
import vdev.mock


def test_like_qemu_speaks_qemu(tmp_path: pathlib.Path) -> None:
    image = tmp_path / "data.raw"
    image.write_bytes(b"")
    with vdev.mock.connect(like="qemu") as conn:
        assert [d.name for d in conn.domains()] == ["demo"]
        assert {t.type for t in conn.device_types()} == {"disk", "network"}
        ref = conn.attach("demo", "disk", source=str(image), format="raw")
        assert ref.startswith("disk-")
        (d,) = conn.devices("demo", "disk")
        assert (d.attrs["bus"], d.attrs["model"]) == ("scsi", "scsi-hd")
        before = conn.devices("demo")
        with pytest.raises(vdev.InvalidAttribute):
            conn.attach("demo", "disk", source=str(tmp_path / "missing.raw"), format="raw")
        with pytest.raises(vdev.InvalidAttribute):
            conn.attach("demo", "disk", source=str(image), format="raw", bus="floppy")
        with pytest.raises(vdev.MissingAttribute):
            conn.attach("demo", "disk", source=str(image))
        assert conn.devices("demo") == before


def test_guest_knobs_per_device(tmp_path: pathlib.Path) -> None:
    a, b = tmp_path / "a.iso", tmp_path / "b.iso"
    a.write_bytes(b"")
    b.write_bytes(b"")
    with vdev.mock.connect(like="qemu") as conn:
        cd = conn.attach("demo", "disk", media="cdrom", source=str(a))
        conn.control.set_guest(tray_locked=True, domain="demo", device=("disk", cd))
        with pytest.raises(vdev.DeviceBusy):
            conn.update("demo", "disk", cd, source=str(b))
        conn.update("demo", "disk", cd, source=str(b), force="true")
        conn.control.set_guest(removal="refuse", domain="demo")
        with pytest.raises(vdev.RemovalRefused):
            conn.detach("demo", "disk", cd)
        assert [d.state for d in conn.devices("demo")] == ["connected"]
        conn.control.set_guest(removal="immediate", domain="demo")
        conn.detach("demo", "disk", cd)
        assert conn.devices("demo") == []


def test_like_xen_and_a_busy_guest() -> None:
    with vdev.mock.connect("mock:///default?busy=100", like="xen") as conn:
        ref = conn.attach("demo", "disk", target="/var/lib/xen/images/a.img", vdev="xvdb")
        assert ref == "51728"
        with pytest.raises(vdev.Timeout):
            conn.detach("demo", "disk", ref, timeout=0.05)
        conn.control.set_guest(busy=0)
        conn.detach("demo", "disk", ref)


@pytest.mark.vdev_mock(like="qemu")
def test_the_fixture_speaks_like_the_marker_says(vdev_mock: vdev.Connection) -> None:
    assert [d.name for d in vdev_mock.domains()] == ["demo"]


def test_an_unknown_like_is_refused() -> None:
    with pytest.raises(ValueError, match="like"):
        vdev.mock.connect(like="vmware")
    with pytest.raises(vdev.InvalidUri, match="like"):
        vdev.mock.connect("mock:///default?like=vmware")


def test_a_xen_guest_that_never_connects() -> None:
    with vdev.mock.connect(like="xen") as conn:
        conn.control.set_guest(connect="never", domain="demo")
        conn.attach("demo", "network")
        assert [d.state for d in conn.devices("demo")] == ["init-wait"]


@pytest.mark.vdev_mock(like="libvirt")
def test_like_libvirt_speaks_libvirt(vdev_mock: vdev.Connection, tmp_path: pathlib.Path) -> None:
    image = tmp_path / "data.raw"
    image.write_bytes(b"")
    ref = vdev_mock.attach("demo", "disk", source=str(image), target="sdb")
    assert ref.startswith("ua-disk-")
    (d,) = vdev_mock.devices("demo", "disk")
    assert (d.attrs["bus"], d.attrs["format"], d.attrs["target"]) == ("scsi", "raw", "sdb")
    nic = vdev_mock.attach("demo", "network")
    assert nic.startswith("ua-net-")
    (n,) = vdev_mock.devices("demo", "network")
    assert n.attrs["mac"].startswith("52:54:00:") and n.attrs["netdev"] == "user"
    before = vdev_mock.devices("demo")
    with pytest.raises(vdev.InvalidAttribute):
        vdev_mock.attach("demo", "disk", source=str(tmp_path / "missing.raw"))
    with pytest.raises(vdev.DeviceExists):
        vdev_mock.attach("demo", "disk", source=str(image), target="sdb")
    with pytest.raises(vdev.DeviceExists):
        vdev_mock.attach("demo", "network", mac=n.attrs["mac"])
    assert vdev_mock.devices("demo") == before
