"""The mock driver for test suites: an in-memory (or state-file) hypervisor with a control handle.

``conn = vdev.mock.connect()`` opens a fresh mock host; ``conn.control`` injects faults
(``fail_nth``), adds latency, holds detaches pending (``set_removal("pending")``) and releases
them, sets how the guest behaves (``set_guest``), and keeps a call log. The pytest fixture
``vdev_mock`` gives one per test.

``vdev.mock.connect(like="qemu")`` (or ``"xen"``, ``"libvirt"``) opens a host that speaks that driver's
language: its device types, attribute names, references and errors, so that a test suite
written for QEMU runs unchanged on the mock::

    conn = vdev.mock.connect(like="qemu")
    demo = conn.domain("demo")
    ref = conn.attach(demo, "disk", source="/var/lib/vms/data.raw", format="raw")
    conn.control.set_guest(removal="pending", domain="demo", device=("disk", ref))

In pytest, mark a test ``@pytest.mark.vdev_mock(like="qemu")`` and its ``vdev_mock`` fixture
speaks like QEMU.
"""

from __future__ import annotations

from ._vdev import Call, Connection, MockControl
from ._vdev import mock_connect as _mock_connect

__all__ = ["LIKE", "Call", "MockControl", "connect", "with_like"]

#: The drivers whose language the mock speaks (``like=``).
LIKE = ("qemu", "xen", "libvirt")


def with_like(uri: str, like: str | None) -> str:
    """``uri`` with the option ``like=LIKE`` added (unchanged when ``like`` is None)."""
    if like is None:
        return uri
    if like not in LIKE:
        raise ValueError(f"like: {like!r} is not one of {', '.join(LIKE)}")
    return f"{uri}{'&' if '?' in uri else '?'}like={like}"


def connect(
    uri: str = "mock:///default", readonly: bool = False, like: str | None = None
) -> Connection:
    """Open a mock host (``mock:///default``: fresh and in memory; ``mock:///PATH.json``: a state
    file shared with other processes, such as the ``vdev`` command). ``like="qemu"``,
    ``"xen"`` or ``"libvirt"``: the host speaks that driver's language. The connection's ``control`` is the
    host's ``MockControl``."""
    conn: Connection = _mock_connect(with_like(uri, like), readonly, False)
    return conn
