"""The asyncio flavour: the same API awaited, events as async iterators."""

from __future__ import annotations

import asyncio
import threading

import pytest

import vdev
import vdev.aio
from conftest import DISK, WAIT


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def test_every_operation_awaited():
    async def main():
        async with vdev.aio.mock_connect() as conn:
            assert isinstance(conn, vdev.aio.Connection)
            assert [d.name for d in await conn.domains()] == ["Domain-0", "demo"]
            demo = await conn.domain("demo")
            assert await conn.lookup(demo.id) == demo
            assert {s.type for s in await conn.device_types()} >= {"disk", "network"}
            assert (await conn.schema("disk")).type == "disk"
            ref = await conn.attach(demo, "disk", DISK)
            assert ref in [d.ref for d in await conn.devices("demo", "disk")]
            nic = await conn.attach(demo, "network", link="up")
            assert await conn.update(demo, "network", nic, link="down") is None
            assert await conn.detach(demo, "disk", ref, timeout=WAIT) is None
            conn.control.set_removal("pending")
            with pytest.raises(vdev.RemovalPending):
                await conn.detach(demo, "network", nic, timeout=0)
            assert await conn.control.release() == 1
            with pytest.raises(vdev.DomainNotFound) as e:
                await conn.domain("nope")
            assert e.value.code == "domain-not-found"
            assert conn.capabilities.attach and not conn.is_read_only()
            # With latency the calls suspend: the runtime finishes them and wakes the loop.
            conn.control.set_removal("immediate")
            conn.control.set_latency(0.01)
            ref = await conn.attach(demo, "disk", DISK)
            with pytest.raises(vdev.DeviceExists):
                await conn.attach(demo, "disk", DISK)
            await conn.detach(demo, "disk", ref)
            conn.control.set_latency(0)
        assert conn.closed

    run(main())


def test_connect_awaited_and_as_context_manager():
    async def main():
        conn = await vdev.aio.connect("mock:///default", readonly=True)
        assert conn.is_read_only()
        with pytest.raises(vdev.ReadOnly):
            await conn.attach("demo", "disk", DISK)
        await conn.close()
        async with vdev.aio.connect("mock:///default") as c2:
            assert await c2.devices(1)
        with pytest.raises(vdev.NoDriver):
            await vdev.aio.connect("nosuch:///x")
        with pytest.raises(TypeError, match="uri"):
            vdev.aio.connect(42)  # type: ignore[arg-type]

    run(main())


def test_events_async_for():
    async def main():
        async with vdev.aio.mock_connect() as conn:
            events = conn.events()
            watched = conn.watch("demo")
            ref = await conn.attach("demo", "disk", DISK)
            await conn.detach("demo", "disk", ref)
            kinds = []
            async for e in events:
                kinds.append((e.kind, e.ref))
                if e.kind == "removed":
                    break
            assert kinds[0] == ("added", ref) and kinds[-1] == ("removed", ref)
            e = await watched.next(timeout=WAIT)
            assert e.kind == "added" and e.domain.name == "demo"
            assert await conn.events().next(timeout=0.05) is None
            events.close()
            with pytest.raises(StopAsyncIteration):
                await events.__anext__()

    run(main())


def test_concurrent_attaches_and_blocking_threads_share_the_runtime():
    """asyncio tasks and blocking threads on the same mock host at once."""
    conn_sync = vdev.mock.connect("mock:///default")

    def blocking_worker():
        for i in range(50):
            r = conn_sync.attach("demo", "disk", uname=f"file:/t{i}", dev=f"d{i + 2}", mode="r")
            conn_sync.detach("demo", "disk", r)

    async def main():
        t = threading.Thread(target=blocking_worker)
        t.start()
        async with vdev.aio.mock_connect() as conn:
            refs = await asyncio.gather(
                *(
                    conn.attach("demo", "disk", uname=f"file:/a{i}", dev=f"d{i + 2}", mode="r")
                    for i in range(64)
                )
            )
            assert len(set(refs)) == 64
        await asyncio.to_thread(t.join, WAIT)
        assert not t.is_alive()

    run(main())
    conn_sync.close()
