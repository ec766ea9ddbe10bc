"""vdev for asyncio: the API of ``vdev.Connection``, awaited.

``async with vdev.aio.connect(uri) as conn:`` (or ``conn = await vdev.aio.connect(uri)``), then
``await conn.attach(...)``, ``async for event in conn.events():``. Every call runs on the one
tokio runtime of the process, beside the blocking API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any

from ._vdev import AsyncConnection as Connection
from ._vdev import AsyncEvents as Events
from ._vdev import connect_async as _connect_async
from ._vdev import mock_connect as _mock_connect

__all__ = ["Connection", "Events", "Opening", "connect", "mock_connect"]


class Opening:
    """A connection being opened: await it for the ``Connection``, or use it with
    ``async with`` to have the connection closed at the end of the block."""

    __slots__ = ("_open", "_conn")

    def __init__(self, open: Callable[[], Awaitable[Connection]]) -> None:
        self._open = open
        self._conn: Connection | None = None

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._open().__await__()

    async def __aenter__(self) -> Connection:
        self._conn = await self._open()
        return self._conn

    async def __aexit__(self, *exc: object) -> bool:
        if self._conn is not None:
            await self._conn.close()
        return False


def _check(uri: object, readonly: object) -> None:
    if not isinstance(uri, str):
        raise TypeError(f"uri: expected a str, not {type(uri).__name__}")
    if not isinstance(readonly, bool):
        raise TypeError(f"readonly: expected a bool, not {type(readonly).__name__}")


def connect(uri: str, readonly: bool = False) -> Opening:
    """Open a connection for asyncio; the driver is chosen by the URI's scheme."""
    _check(uri, readonly)
    return Opening(lambda: _connect_async(uri, readonly))


def mock_connect(uri: str = "mock:///default", readonly: bool = False) -> Opening:
    """Open a mock host for asyncio; the connection's ``control`` is its ``MockControl``
    (whose ``release()`` is awaited)."""
    _check(uri, readonly)

    async def open() -> Connection:
        conn: Connection = _mock_connect(uri, readonly, True)
        return conn

    return Opening(open)
