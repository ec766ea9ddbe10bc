"""The mock driver for test suites: an in-memory (or state-file) hypervisor with a control handle.

``conn = vdev.mock.connect()`` opens a fresh mock host; ``conn.control`` injects faults
(``fail_nth``), adds latency, holds detaches pending (``set_removal("pending")``) and releases
them, and keeps a call log. The pytest fixture ``vdev_mock`` gives one per test.
"""

from __future__ import annotations

from ._vdev import Call, Connection, MockControl
from ._vdev import mock_connect as _mock_connect

__all__ = ["Call", "MockControl", "connect"]


def connect(uri: str = "mock:///default", readonly: bool = False) -> Connection:
    """Open a mock host (``mock:///default``: fresh and in memory; ``mock:///PATH.json``: a state
    file shared with other processes, such as the ``vdev`` command). The connection's
    ``control`` is the host's ``MockControl``."""
    conn: Connection = _mock_connect(uri, readonly, False)
    return conn
