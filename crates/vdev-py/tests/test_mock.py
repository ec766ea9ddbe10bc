"""Every operation of the blocking API on the mock, input checks, the control handle, the
fixture."""

from __future__ import annotations

import threading

import pytest

import vdev
import vdev.mock
from conftest import DISK, WAIT, within_wait


def test_connect_as_context_manager_closes():
    with vdev.connect("mock:///default") as conn:
        assert conn.driver == "mock"
        assert conn.uri == "mock:///default"
        assert not conn.closed
        assert [d.name for d in conn.domains()] == ["Domain-0", "demo"]
    assert conn.closed
    with pytest.raises(ValueError, match="closed"):
        conn.domains()
    conn.close()  # twice: nothing happens


def test_drivers_lists_every_driver():
    names = {d.name: d for d in vdev.drivers()}
    assert set(names) == {"mock", "qemu", "xen"}
    assert "mock" in names["mock"].schemes and names["mock"].description


def test_domain_by_name_id_and_object(vdev_mock):
    demo = vdev_mock.domain("demo")
    assert isinstance(demo, vdev.Domain) and demo.name == "demo"
    assert vdev_mock.domain(demo.id) == demo
    assert vdev_mock.domain(str(demo.id)) == demo
    assert vdev_mock.domain(demo) == demo
    assert vdev_mock.lookup(demo.id) == demo
    assert vdev_mock.lookup("demo") == demo
    assert hash(demo) == hash(vdev_mock.domain("demo"))
    assert repr(demo) == 'Domain(id=1, name="demo")'


def test_schema_and_device_types(vdev_mock):
    types = {s.type for s in vdev_mock.device_types()}
    assert {"disk", "network"} <= types
    disk = vdev_mock.schema("disk")
    assert disk.type == "disk" and disk.description
    uname = next(a for a in disk.attributes if a.name == "uname")
    assert uname.required and uname.example
    net = vdev_mock.schema("network")
    assert any(a.name == "link" and a.updatable for a in net.attributes)


def test_attach_list_update_detach(vdev_mock):
    demo = vdev_mock.domain("demo")
    ref = vdev_mock.attach(demo, "disk", DISK)
    assert ref == "51728"
    disks = vdev_mock.devices("demo", "disk")
    dev = next(d for d in disks if d.ref == ref)
    assert dev.type == "disk" and dev.state == "connected"
    assert dev.attrs["uname"] == "file:/img/b.raw" and dev.attrs["dev"] == "xvdb"
    assert {d.type for d in vdev_mock.devices(1)} >= {"disk"}

    nic = vdev_mock.attach("demo", "network")
    vdev_mock.update("demo", "network", nic, link="down")
    (n,) = [d for d in vdev_mock.devices("demo", "network") if d.ref == nic]
    assert n.attrs["link"] == "down"
    vdev_mock.update("demo", "network", nic, {"link": "up"})

    vdev_mock.detach("demo", "disk", ref, timeout=WAIT)
    vdev_mock.detach(demo, "network", nic, timeout=0.5, force=True)
    assert ref not in [d.ref for d in vdev_mock.devices(demo, "disk")]
    assert nic not in [d.ref for d in vdev_mock.devices(demo, "network")]


def test_attributes_as_keywords_and_dict_together(vdev_mock):
    ref = vdev_mock.attach("demo", "disk", {"uname": "file:/img/c.raw"}, dev="xvdc", mode="r")
    assert ref == "51744"
    with pytest.raises(TypeError, match="given twice"):
        vdev_mock.attach("demo", "disk", {"dev": "xvdd"}, dev="xvdd", uname="file:/x", mode="r")


def test_capabilities_and_readonly():
    with vdev.mock.connect(readonly=True) as conn:
        assert conn.is_read_only() and conn.readonly
        assert conn.capabilities.attach and conn.capabilities.events
        assert conn.devices("demo")
        with pytest.raises(vdev.ReadOnly):
            conn.attach("demo", "disk", DISK)
    with vdev.connect("mock:///default", readonly=True) as conn:
        assert conn.is_read_only()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda c: c.domain(1.5), "key: expected a domain name"),
        (lambda c: c.devices(["demo"]), "domain: expected"),
        (lambda c: c.devices("demo", 3), "type: expected a str"),
        (lambda c: c.attach("demo", "disk", [("uname", "x")]), "attrs: expected a dict"),
        (lambda c: c.attach("demo", "disk", {"uname": 1}), "the value of 'uname' must be a str"),
        (lambda c: c.attach("demo", "disk", {1: "x"}), "attribute names must be str"),
        (lambda c: c.detach("demo", "disk", 51712), "ref: expected a str"),
        (lambda c: c.detach("demo", "disk", "51712", timeout="1"), "timeout: expected seconds"),
        (lambda c: c.detach("demo", "disk", "51712", timeout=True), "timeout: expected seconds"),
        (lambda c: c.events().next(timeout=[]), "timeout: expected seconds"),
        (lambda c: c.control.set_removal(None), "removal: expected"),
        (lambda c: c.control.set_latency("x"), "seconds: expected"),
    ],
)
def test_wrong_types_are_type_errors_naming_the_argument(vdev_mock, call, match):
    with pytest.raises(TypeError, match=match):
        call(vdev_mock)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda c: c.domain(-1), "key: a domain id is 0 to"),
        (lambda c: c.detach("demo", "disk", "51712", timeout=-1), "timeout: -1"),
        (lambda c: c.detach("demo", "disk", "51712", timeout=float("nan")), "timeout: NaN"),
        (lambda c: c.detach("demo", "disk", "51712", timeout=1e300), "timeout: "),
        (lambda c: c.control.fail_nth("fly", 1, "backend"), "op: unknown operation 'fly'"),
        (lambda c: c.control.fail_nth("attach", 0, "backend"), "nth: calls are counted from 1"),
        (lambda c: c.control.fail_nth("attach", 1, "oops"), "code: 'oops' is not an error code"),
        (lambda c: c.control.set_removal("later"), "removal: 'later'"),
        (lambda c: c.control.call_count("fly"), "op: unknown operation"),
    ],
)
def test_bad_values_are_value_errors_naming_the_argument(vdev_mock, call, match):
    with pytest.raises(ValueError, match=match):
        call(vdev_mock)


def test_malformed_names_are_vdev_errors(vdev_mock):
    with pytest.raises(vdev.InvalidAttribute, match="device type"):
        vdev_mock.devices("demo", "Disk!")
    with pytest.raises(vdev.InvalidAttribute, match="device reference"):
        vdev_mock.detach("demo", "disk", "../x")
    with pytest.raises(vdev.InvalidAttribute):
        vdev_mock.attach("demo", "disk", {"bad name": "x"})


def test_control_faults_latency_and_call_log(vdev_mock):
    c = vdev_mock.control
    c.fail_nth("attach", 2, "device-exists")
    vdev_mock.attach("demo", "disk", DISK)
    with pytest.raises(vdev.DeviceExists, match="injected"):
        vdev_mock.attach("demo", "disk", uname="file:/x", dev="xvdc", mode="r")
    calls = [x for x in c.calls() if x.op == "attach"]
    assert [x.error for x in calls] == [None, "device-exists"]
    assert calls[0].domain == "demo" and calls[0].type == "disk" and calls[0].ref == "51728"
    assert c.call_count("attach") == 2
    c.clear_calls()
    assert c.calls() == [] and c.call_count("attach") == 2
    c.fail_nth("detach", 1, "backend")
    c.clear_faults()
    c.set_latency(0.001)
    vdev_mock.detach("demo", "disk", "51728")
    c.set_latency(0)


def test_pending_removal_and_release(vdev_mock):
    c = vdev_mock.control
    ref = vdev_mock.attach("demo", "disk", DISK)
    c.set_removal("pending")
    with pytest.raises(vdev.RemovalPending) as e:
        vdev_mock.detach("demo", "disk", ref, timeout=0)
    assert e.value.code == "removal-pending"
    (d,) = [d for d in vdev_mock.devices("demo", "disk") if d.ref == ref]
    assert d.state == "removal-pending"
    assert c.release() == 1
    assert ref not in [d.ref for d in vdev_mock.devices("demo", "disk")]
    c.set_removal(0.01)
    ref = vdev_mock.attach("demo", "disk", DISK)
    vdev_mock.detach("demo", "disk", ref, timeout=WAIT)
    c.set_removal("immediate")


def test_events_blocking(vdev_mock):
    demo = vdev_mock.domain("demo")
    # Iterated (which blocks with no bound) on a thread of its own, bounded by within_wait;
    # not closed by the test while a failed wait may still hold it.
    iterated = vdev_mock.events()
    with vdev_mock.events() as events, vdev_mock.watch("demo") as watched:
        ref = vdev_mock.attach(demo, "disk", DISK)
        e = events.next(timeout=WAIT)
        assert e is not None and e.kind == "added"
        assert (e.domain, e.type, e.ref, e.state, e.attrs) == (demo, "disk", ref, None, None)
        vdev_mock.detach(demo, "disk", ref)

        def until_removed() -> list[str]:
            kinds = []
            for e in iterated:
                kinds.append(e.kind)
                if e.kind == "removed":
                    break
            return kinds

        kinds = within_wait("the disk's removed event, iterating the events", until_removed)
        assert kinds[0] == "added" and kinds[-1] == "removed"
        iterated.close()
        assert watched.next(timeout=WAIT).kind == "added"
        nic = vdev_mock.attach(demo, "network")
        vdev_mock.update(demo, "network", nic, link="down")
        seen = []
        while (e := watched.next(timeout=WAIT)) is not None:
            seen.append(e)
            if e.kind == "updated":
                break
        assert seen[-1].attrs == {"link": "down"} and seen[-1].ref == nic
    assert events.next(timeout=0.01) is None  # closed: ends
    # Nothing happens: a timeout answers None.
    assert vdev_mock.events().next(timeout=0.05) is None


def test_eight_threads_attach_at_once(vdev_mock):
    demo = vdev_mock.domain("demo")
    barrier = threading.Barrier(8, timeout=WAIT)
    refs: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        try:
            barrier.wait()
            for j in range(25):
                n = i * 25 + j
                r = vdev_mock.attach(demo, "disk", uname=f"file:/img/{n}.raw", dev=f"d{n + 2}", mode="r")
                with lock:
                    refs.append(r)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert errors == []
    assert len(set(refs)) == 200
    listed = {d.ref for d in vdev_mock.devices(demo, "disk")}
    assert set(refs) <= listed


def test_fixture_gives_a_fresh_host(vdev_mock):
    assert isinstance(vdev_mock, vdev.Connection)
    assert isinstance(vdev_mock.control, vdev.MockControl)
    assert [d.ref for d in vdev_mock.devices("demo", "disk")] == ["51712"]
    vdev_mock.attach("demo", "disk", DISK)


def test_fixture_gives_a_fresh_host_again(vdev_mock):
    assert [d.ref for d in vdev_mock.devices("demo", "disk")] == ["51712"]


def test_connection_without_control():
    with vdev.connect("mock:///default") as conn:
        assert conn.control is None
