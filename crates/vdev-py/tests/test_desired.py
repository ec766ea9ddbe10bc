"""Desired state from Python: conn.plan(doc), conn.apply(doc), conn.export(domain) and
conn.attach_batch(domain, devices) on a mock host kept in a state file, with documents given as
dicts, as paths (str and pathlib) of YAML and JSON files, and their typed results."""

from __future__ import annotations

import asyncio
import json

import pytest

import vdev
import vdev.aio

DOC = {
    "domains": {
        "demo": {
            "exclusive": ["network"],
            "devices": [
                {"type": "disk", "attrs": {"uname": "file:/img/a.img", "dev": "xvdb", "mode": "rw"}},
                {"type": "disk", "attrs": {"uname": "file:/img/b.img", "dev": "xvdc", "mode": "r"}},
                {"type": "disk", "state": "absent", "attrs": {"dev": "xvdd"}},
            ],
        }
    }
}

DOC_YAML = """
domains:
  demo:
    exclusive: [network]
    devices:
      - type: disk
        attrs: {uname: "file:/img/a.img", dev: xvdb, mode: rw}
      - type: disk
        attrs: {uname: "file:/img/b.img", dev: xvdc, mode: r}
"""


@pytest.fixture
def host(tmp_path):
    """A mock host in a state file: (uri, path of the file), the file written once."""
    uri = f"mock://{tmp_path}/host.json"
    with vdev.connect(uri) as conn:
        conn.domains()
    return uri, tmp_path / "host.json"


def disks(conn: vdev.Connection) -> list[tuple[str, str, str]]:
    return sorted((d.attrs["dev"], d.attrs["uname"], d.attrs["mode"]) for d in conn.devices("demo", "disk"))


def test_plan_apply_reapply_export_round_trip(host, tmp_path):
    uri, state = host
    with vdev.connect(uri) as conn:
        # The plan: typed changes, nothing changed yet.
        plan = conn.plan(DOC)
        assert [(c.op, c.type) for c in plan] == [("remove", "network"), ("add", "disk"), ("add", "disk")]
        remove, add, _ = plan
        assert all(isinstance(c, vdev.Change) for c in plan)
        assert remove.ref == "0" and remove.entry is None and remove.reason is None
        assert add.domain == "demo" and add.ref is None and add.entry == 0
        assert add.attrs == {"uname": "file:/img/a.img", "dev": "xvdb", "mode": "rw"}
        assert str(add) == "+ demo disk dev=xvdb mode=rw uname=file:/img/a.img"
        assert repr(add) == 'Change(op="add", domain="demo", type="disk", ref=None)'
        assert add == conn.plan(DOC)[1] and add != remove
        assert [d.ref for d in conn.devices("demo", "network")] == ["0"]

        # Apply: every change done, the adds with their new references.
        report = conn.apply(DOC)
        assert isinstance(report, vdev.ApplyReport)
        assert report.changed and report.pending == 0 and report.error is None
        assert len(report) == 3
        assert [(a.change.op, a.outcome, a.error) for a in report.changes] == [
            ("remove", "done", None),
            ("add", "done", None),
            ("add", "done", None),
        ]
        assert [a.change.ref for a in report.changes[1:]] == ["51728", "51744"]
        assert isinstance(report.changes[0], vdev.Applied)
        assert str(report.changes[1]).endswith("  done")
        assert disks(conn) == [
            ("xvda", "file:/var/lib/xen/images/demo.img", "w"),
            ("xvdb", "file:/img/a.img", "w"),
            ("xvdc", "file:/img/b.img", "r"),
        ]
        assert conn.devices("demo", "network") == []

        # Again, from a YAML file (str path) and a JSON file (pathlib): nothing to do, and the
        # state file is not even rewritten.
        before = state.read_bytes()
        yaml_file = tmp_path / "doc.yaml"
        yaml_file.write_text(DOC_YAML)
        json_file = tmp_path / "doc.json"
        json_file.write_text(json.dumps(DOC))
        assert conn.plan(str(yaml_file)) == [] and conn.plan(json_file) == []
        again = conn.apply(str(yaml_file))
        assert not again.changed and len(again) == 0 and again.changes == []
        assert not conn.apply(json_file).changed
        assert state.read_bytes() == before

        # The export: a dict in the document's schema, which plans to nothing.
        exported = conn.export("demo")
        assert isinstance(exported, dict)
        (entries,) = exported["domains"].values()
        assert "file:/img/b.img" in json.dumps(entries["devices"])
        assert conn.plan(exported) == []
        assert conn.export(conn.domain("demo")) == exported

    # Another client (a new connection on the file) sees what apply made.
    with vdev.connect(uri) as other:
        assert len(disks(other)) == 3 and other.plan(DOC) == []


def test_update_and_replace_are_typed_and_a_replace_is_not_made(host):
    uri, _ = host
    with vdev.connect(uri) as conn:
        doc = {
            "domains": {
                "demo": {
                    "devices": [
                        {"type": "disk", "attrs": {"dev": "xvda", "uname": "file:/var/lib/xen/images/demo.img", "mode": "r"}}
                    ]
                }
            }
        }
        (change,) = conn.plan(doc)
        assert change.op == "replace" and change.ref == "51712" and change.entry == 0
        assert change.attrs == {"mode": "r"} and change.reason and "mode" in change.reason
        report = conn.apply(doc)
        assert [a.outcome for a in report.changes] == ["not-made"]
        assert not report.changed and report.error is None
        assert disks(conn)[0][2] == "w"


def test_a_batch_whose_third_entry_fails_leaves_nothing(host):
    uri, state = host
    before = state.read_bytes()
    doc = {
        "domains": {
            "demo": {
                "devices": [
                    {"type": "disk", "attrs": {"uname": "file:/img/1", "dev": "xvdb", "mode": "w"}},
                    {"type": "disk", "attrs": {"uname": "file:/img/2", "dev": "xvdc", "mode": "w"}},
                    {"type": "disk", "attrs": {"uname": "file:/img/3", "dev": "xvdd", "mode": "sideways"}},
                ]
            }
        }
    }
    with vdev.connect(uri) as conn:
        # apply raises the entry's own condition, carrying the report of what was done.
        with pytest.raises(vdev.InvalidAttribute, match=r"entry 2 \(domains\.demo\.devices\[2\]") as e:
            conn.apply(doc)
        assert e.value.code == "invalid-attribute" and e.value.index == 2
        report = e.value.report
        assert isinstance(report, vdev.ApplyReport)
        assert not report.changed
        assert {a.outcome for a in report.changes} == {"failed"}
        assert isinstance(report.error, vdev.InvalidAttribute)
        assert isinstance(report.changes[0].error, vdev.InvalidAttribute)
        assert state.read_bytes() == before

        # check=False: the same report, returned.
        report = conn.apply(doc, check=False)
        assert isinstance(report.error, vdev.InvalidAttribute) and "entry 2" in str(report.error)
        assert state.read_bytes() == before

        # attach_batch: the same all-or-none, by (type, attrs) pairs.
        batch = [
            ("disk", {"uname": "file:/img/1", "dev": "xvdb", "mode": "w"}),
            ("disk", {"uname": "file:/img/2", "dev": "xvdc", "mode": "w"}),
            ("disk", {"uname": "file:/img/3", "dev": "xvdb", "mode": "w"}),
        ]
        with pytest.raises(vdev.DeviceExists, match="entry 2") as e:
            conn.attach_batch("demo", batch)
        assert e.value.index == 2 and e.value.report is None
        assert state.read_bytes() == before
        assert len(disks(conn)) == 1

        assert conn.attach_batch("demo", batch[:2]) == ["51728", "51744"]
        assert len(disks(conn)) == 3
        assert conn.attach_batch("demo", []) == []


def test_attach_batch_refuses_what_is_not_pairs(vdev_mock):
    with pytest.raises(TypeError, match=r"devices\[0\]: expected a \(type, attrs\) pair, not str"):
        vdev_mock.attach_batch("demo", ["disk"])
    with pytest.raises(TypeError, match="devices: expected a sequence"):
        vdev_mock.attach_batch("demo", {"disk": {}})
    with pytest.raises(TypeError, match="attrs: the value of 'dev' must be a str"):
        vdev_mock.attach_batch("demo", [("disk", {"dev": 1})])


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (
            {"domains": {"demo": {"devices": [{"type": "disk", "atrs": {"dev": "xvdb"}}]}}},
            "domains.demo.devices[0].atrs: unknown field `atrs`, expected one of `type`, `state`, `id`, `attrs`",
        ),
        (
            {"domains": {"demo": {"devices": [{"type": "disk", "attrs": {"mode": "w"}}]}}},
            "none of the attributes that identify a disk (dev, uname)",
        ),
        (
            {"domains": {"demo": {"devices": [{"type": "disk", "attrs": {"dev": "xvdb", "uname": "file:/a", "colour": "red"}}]}}},
            "domains.demo.devices[0].attrs: invalid attribute 'colour'",
        ),
        (
            {"domains": {"demo": {"devices": [{"type": "disk", "attrs": {"dev": ["xvdb"]}}]}}},
            "domains.demo.devices[0].attrs",
        ),
        ({"domain": {}}, "unknown field `domain`"),
    ],
)
def test_malformed_documents_raise_invalid_document_naming_the_place(host, doc, says):
    uri, state = host
    before = state.read_bytes()
    with vdev.connect(uri) as conn:
        for call in (conn.plan, conn.apply):
            with pytest.raises(vdev.InvalidDocument) as e:
                call(doc)
            assert says in str(e.value), str(e.value)
            # A dict has no lines: the place is the path of keys alone.
            assert "(line " not in str(e.value)
            assert e.value.code == "invalid-document" and e.value.report is None
    assert state.read_bytes() == before


def test_a_malformed_file_is_named_with_its_line(host, tmp_path):
    uri, state = host
    before = state.read_bytes()
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains:\n  demo:\n    devices:\n      - type: disk\n        atrs: {dev: xvdb}\n")
    with vdev.connect(uri) as conn:
        with pytest.raises(vdev.InvalidDocument, match=r"bad\.yaml: domains\.demo\.devices\[0\]\.atrs \(line 5 column 9\)"):
            conn.apply(bad)
        dup = tmp_path / "dup.yaml"
        dup.write_text(
            "domains: {demo: {devices: [{type: disk, attrs: {dev: xvdb, uname: 'file:/a', mode: w}},"
            " {type: disk, attrs: {dev: xvdb, uname: 'file:/b', mode: w}}]}}"
        )
        with pytest.raises(vdev.InvalidDocument, match=r"dup\.yaml: domains\.demo\.devices\[1\]: entry 0 is the same disk"):
            conn.plan(str(dup))
        with pytest.raises(vdev.InvalidDocument, match="nonexistent.yaml: cannot be read"):
            conn.plan(tmp_path / "nonexistent.yaml")
        with pytest.raises(vdev.DomainNotFound):
            conn.apply({"domains": {"nosuch": {}}})
    assert state.read_bytes() == before


def test_arguments_of_the_wrong_type(vdev_mock):
    with pytest.raises(TypeError, match="doc: expected a document"):
        vdev_mock.plan(42)
    with pytest.raises(TypeError, match="not JSON"):
        vdev_mock.plan({"domains": {"demo": {"devices": [{"type": "disk", "attrs": {"dev": {1, 2}}}]}}})
    with pytest.raises(ValueError, match="scope: expected 'live', 'persistent' or 'both'"):
        vdev_mock.apply(DOC, scope="everywhere")
    with pytest.raises(ValueError, match="timeout"):
        vdev_mock.apply(DOC, timeout=-1)
    # A scope the mock does not offer (it has "live" only) is Unsupported, and nothing changes.
    with pytest.raises(vdev.Unsupported, match="persistent"):
        vdev_mock.apply(DOC, scope="persistent")
    assert [d.ref for d in vdev_mock.devices("demo", "network")] == ["0"]
    assert vdev_mock.apply(DOC, scope="live").changed
    assert vdev_mock.devices("demo", "network") == []


def test_a_pending_removal_is_reported_not_raised(vdev_mock):
    vdev_mock.control.set_removal("pending")
    doc = {"domains": {"demo": {"devices": [{"type": "disk", "state": "absent", "attrs": {"dev": "xvda"}}]}}}
    report = vdev_mock.apply(doc, timeout=0.1)
    assert report.pending == 1 and report.changed and report.error is None
    assert [a.outcome for a in report.changes] == ["removal-pending"]
    assert vdev_mock.devices("demo", "disk")[0].state == "removal-pending"


def test_the_asyncio_flavour():
    async def main() -> None:
        async with vdev.aio.mock_connect() as conn:
            plan = await conn.plan(DOC)
            assert [c.op for c in plan] == ["remove", "add", "add"]
            report = await conn.apply(DOC)
            assert report.changed and len(report) == 3
            assert (await conn.plan(await conn.export("demo"))) == []
            assert await conn.attach_batch("demo", [("disk", {"uname": "file:/img/z", "dev": "xvdz", "mode": "r"})])
            with pytest.raises(vdev.InvalidAttribute) as e:
                await conn.apply(
                    {"domains": {"demo": {"devices": [{"type": "disk", "attrs": {"uname": "file:/q", "dev": "xvdq", "mode": "x"}}]}}}
                )
            assert e.value.report is not None and e.value.report.error is not None

    asyncio.run(main())


def test_scopes_reach_every_change(vdev_mock):
    # attach, update, detach and attach_batch take the scope apply takes: the mock offers
    # "live" only, so "live" works, "persistent" and "both" are Unsupported with nothing changed,
    # and a misspelt scope is a ValueError.
    before = vdev_mock.export("demo")
    cd = {"uname": "", "dev": "xvdd", "mode": "r", "devtype": "cdrom"}
    for scope in ("persistent", "both"):
        with pytest.raises(vdev.Unsupported, match="live"):
            vdev_mock.attach("demo", "disk", cd, scope=scope)
        with pytest.raises(vdev.Unsupported, match="live"):
            vdev_mock.attach_batch("demo", [("disk", cd)], scope=scope)
    with pytest.raises(ValueError, match="scope: expected"):
        vdev_mock.attach("demo", "disk", cd, scope="config")
    assert vdev_mock.export("demo") == before

    ref = vdev_mock.attach("demo", "disk", cd, scope="live")
    with pytest.raises(vdev.Unsupported):
        vdev_mock.update("demo", "disk", ref, uname="file:/iso/a.iso", scope="persistent")
    vdev_mock.update("demo", "disk", ref, uname="file:/iso/a.iso", scope="live")
    with pytest.raises(vdev.Unsupported):
        vdev_mock.detach("demo", "disk", ref, scope="both")
    assert {d.ref: d.attrs["uname"] for d in vdev_mock.devices("demo", "disk")}[ref] == "file:/iso/a.iso"
    vdev_mock.detach("demo", "disk", ref, scope="live")
    (b,) = vdev_mock.attach_batch("demo", [("disk", {"uname": "file:/b.img", "dev": "xvdb", "mode": "r"})], scope="live")
    assert b in [d.ref for d in vdev_mock.devices("demo", "disk")]
