"""pytest plugin of the ``vdev`` package (registered through the ``pytest11`` entry point).

Fixture ``vdev_mock``: a fresh in-memory mock host for each test, as a ``vdev.Connection`` whose
``control`` is the host's ``vdev.MockControl``; closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import vdev
import vdev.mock


@pytest.fixture
def vdev_mock() -> Iterator[vdev.Connection]:
    """A fresh mock host (``mock:///default``) with its control handle as ``.control``."""
    conn = vdev.mock.connect("mock:///default")
    try:
        yield conn
    finally:
        conn.close()
