"""Every exception class, each raised from a real error, with the stable code and the message the
`vdev` command prints."""

from __future__ import annotations

import threading
import time

import pytest

import vdev
import vdev.mock
from conftest import DISK, WAIT

CLASSES = {
    "invalid-uri": vdev.InvalidUri,
    "no-driver": vdev.NoDriver,
    "duplicate-scheme": vdev.DuplicateScheme,
    "domain-not-found": vdev.DomainNotFound,
    "device-not-found": vdev.DeviceNotFound,
    "device-exists": vdev.DeviceExists,
    "invalid-attribute": vdev.InvalidAttribute,
    "missing-attribute": vdev.MissingAttribute,
    "unsupported": vdev.Unsupported,
    "read-only": vdev.ReadOnly,
    "timeout": vdev.Timeout,
    "removal-pending": vdev.RemovalPending,
    "removal-refused": vdev.RemovalRefused,
    "device-busy": vdev.DeviceBusy,
    "invalid-document": vdev.InvalidDocument,
    "remote": vdev.Remote,
    "backend": vdev.Backend,
}


def test_one_class_per_code():
    assert set(CLASSES) == set(vdev.CODES)
    for code, cls in CLASSES.items():
        assert issubclass(cls, vdev.Error) and cls.code == code
        assert vdev.error_class(code) is cls
        assert cls.__module__ == "vdev" and cls.__doc__
    assert vdev.Error.code is None


def raised(call):
    with pytest.raises(vdev.Error) as e:
        call()
    return e.value


# Conditions the mock produces by itself.
REAL = {
    "invalid-uri": lambda c: vdev.connect("mock://host/default"),
    "no-driver": lambda c: vdev.connect("nosuch:///x"),
    "domain-not-found": lambda c: c.domain("nope"),
    "device-not-found": lambda c: c.detach("demo", "disk", "4242"),
    "device-exists": lambda c: c.attach("demo", "disk", DISK) and c.attach("demo", "disk", DISK),
    "invalid-attribute": lambda c: c.attach("demo", "disk", DISK, colour="red"),
    "missing-attribute": lambda c: c.attach("demo", "disk", dev="xvdb", mode="w"),
    "unsupported": lambda c: c.schema("floppy"),
    "read-only": lambda c: vdev.mock.connect(readonly=True).attach("demo", "disk", DISK),
    "invalid-document": lambda c: c.plan({"domains": {"demo": {"devices": [{"type": "tape"}]}}}),
    "removal-pending": lambda c: (
        c.control.set_removal("pending"),
        c.detach("demo", "disk", "51712", timeout=0),
    ),
}


@pytest.mark.parametrize("code", sorted(REAL))
def test_real_errors(vdev_mock, code):
    e = raised(lambda: REAL[code](vdev_mock))
    assert type(e) is CLASSES[code]
    assert e.code == code
    assert str(e) and not str(e).startswith("error:")


# A condition of a desired-state document, found by the core before any driver is asked: no
# driver answers it (test_real_errors raises it from a real document).
NOT_FROM_DRIVERS = {"invalid-document"}


@pytest.mark.parametrize("code", sorted(set(vdev.CODES) - NOT_FROM_DRIVERS))
def test_every_code_injected_into_the_driver(vdev_mock, code):
    """The mock's fault injection makes the driver answer each condition; the class follows."""
    vdev_mock.control.fail_nth("list_devices", 1, code)
    e = raised(lambda: vdev_mock.devices("demo"))
    assert type(e) is CLASSES[code] and e.code == code
    assert str(e) and not str(e).startswith("error:")


def test_messages_are_the_cli_messages(cli, tmp_path, vdev_mock):
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains:\n  demo:\n    devices:\n      - type: disk\n        atrs: {dev: xvdb}\n")
    batch = tmp_path / "batch.yaml"
    batch.write_text(
        "domains: {demo: {devices: [{type: disk, attrs: {uname: 'file:/1', dev: xvdb, mode: w}},"
        " {type: disk, attrs: {uname: 'file:/2', dev: xvdc, mode: sideways}}]}}"
    )
    cases = [
        (lambda: vdev_mock.plan(str(bad)), ["plan", str(bad)]),
        (lambda: vdev_mock.apply(str(batch)), ["apply", str(batch)]),
        (lambda: vdev_mock.domain("nope"), ["devices", "nope"]),
        (lambda: vdev_mock.schema("floppy"), ["schema", "floppy"]),
        (
            lambda: vdev_mock.attach("demo", "disk", dev="xvdb", mode="w"),
            ["attach", "demo", "disk", "dev=xvdb", "mode=w"],
        ),
        (lambda: vdev.connect("mock://host/default"), ["-c", "mock://host/default", "domains"]),
        (lambda: vdev_mock.detach("demo", "disk", "4242"), ["detach", "demo", "disk", "4242"]),
    ]
    for call, args in cases:
        e = raised(call)
        if args[0] != "-c":
            args = ["-c", "mock:///default", *args]
        p = cli(*args)
        assert p.returncode != 0
        assert p.stderr.strip() == f"error: {e}"


def test_a_blocking_call_lets_other_threads_run_python(vdev_mock):
    """A detach that waits for the guest holds no GIL: while it waits, this thread runs Python,
    and it is this thread that lets the guest release the disk. Were the GIL held, nothing here
    could run until the detach gave up, and it would end in RemovalPending instead."""
    c = vdev_mock
    c.control.set_removal("pending")
    result: dict[str, object] = {}

    def detach() -> None:
        try:
            c.detach("demo", "disk", "51712", timeout=WAIT)
            result["ok"] = True
        except vdev.Error as e:
            result["error"] = e

    t = threading.Thread(target=detach)
    t.start()
    released = 0
    deadline = time.monotonic() + 2 * WAIT
    while t.is_alive() and time.monotonic() < deadline:
        released += c.control.release()
        time.sleep(0.01)
    t.join(WAIT)
    assert result == {"ok": True}, result
    assert released == 1
    assert "51712" not in [d.ref for d in c.devices("demo", "disk")]
