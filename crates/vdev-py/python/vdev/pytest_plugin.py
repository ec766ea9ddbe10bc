"""pytest plugin of the ``vdev`` package (registered through the ``pytest11`` entry point).

Fixture ``vdev_mock``: a fresh in-memory mock host for each test, as a ``vdev.Connection`` whose
``control`` is the host's ``vdev.MockControl``; closed after the test. Mark a test
``@pytest.mark.vdev_mock(like="qemu")`` (or ``"xen"``, ``"libvirt"``) for a host that speaks that driver's
language.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import vdev
import vdev.mock


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vdev_mock(like=DRIVER): the vdev_mock fixture speaks like DRIVER (qemu, xen, libvirt)",
    )


@pytest.fixture
def vdev_mock(request: pytest.FixtureRequest) -> Iterator[vdev.Connection]:
    """A fresh mock host (``mock:///default``) with its control handle as ``.control``; with
    the marker ``vdev_mock(like=DRIVER)``, speaking like that driver."""
    marker = request.node.get_closest_marker("vdev_mock")
    like = None if marker is None else marker.kwargs.get("like")
    conn = vdev.mock.connect("mock:///default", like=like)
    try:
        yield conn
    finally:
        conn.close()
