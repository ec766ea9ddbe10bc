# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The modules run in-process against vdev's mock host kept in a file (mock:///PATH.json), checked
with a second vdev connection to the same file. They need the vdev package (its wheel) in the
Python that runs ansible-test units; without it they skip (the test command installs it)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.vdev.hotplug.plugins.module_utils import vdev_common
from ansible_collections.vdev.hotplug.plugins.modules import device, devices, info

vdev = pytest.importorskip("vdev")

DISK = {"uname": "file:/img/data.raw", "dev": "xvdc", "mode": "w"}
CDROM = {"uname": "file:/iso/a.iso", "dev": "xvdd", "devtype": "cdrom", "mode": "r"}


def run(module, args, check=False, diff=False):
    """Run a module's main() with args; its result (exit_json or fail_json) as a dict."""
    args = dict(args)
    if check:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    return LAST[-1]


LAST = []


@pytest.fixture(autouse=True)
def capture(monkeypatch):
    """Keep what exit_json/fail_json print (the module's JSON result)."""
    from ansible.module_utils import basic

    def exit_json(self, **kw):
        kw.setdefault("changed", False)
        LAST.append(dict(kw, failed=False))
        raise SystemExit(0)

    def fail_json(self, msg, **kw):
        LAST.append(dict(kw, msg=msg, failed=True))
        raise SystemExit(1)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    del LAST[:]


@pytest.fixture
def uri(tmp_path):
    return "mock://%s/host.json" % tmp_path


def disks(uri):
    with vdev.connect(uri) as c:
        return {d.ref: dict(d.attrs, _state=d.state) for d in c.devices("demo", "disk")}


def test_present_adds_then_changes_nothing(uri):
    args = dict(uri=uri, domain="demo", type="disk", attrs=DISK)
    before = disks(uri)
    r = run(device, args)
    assert r["changed"] and not r["failed"] and r["op"] == "add"
    added = set(disks(uri)) - set(before)
    assert added == {r["device"]["ref"]}
    assert disks(uri)[r["device"]["ref"]]["uname"] == "file:/img/data.raw"
    r2 = run(device, args)
    assert not r2["changed"] and r2["op"] is None
    assert r2["device"]["ref"] == r["device"]["ref"]
    assert len(disks(uri)) == len(before) + 1


def test_normal_form_is_no_change(uri):
    run(device, dict(uri=uri, domain="demo", type="disk", attrs=DISK))
    r = run(device, dict(uri=uri, domain="demo", type="disk", attrs=dict(DISK, mode="rw")))
    assert not r["changed"]


def test_check_mode_predicts_and_changes_nothing(uri):
    before = disks(uri)
    r = run(device, dict(uri=uri, domain="demo", type="disk", attrs=DISK), check=True, diff=True)
    assert r["changed"] and r["op"] == "add"
    assert r["diff"]["before"] == {} and r["diff"]["after"]["uname"] == "file:/img/data.raw"
    assert disks(uri) == before


def test_cdrom_medium_is_one_update_in_place(uri):
    r = run(device, dict(uri=uri, domain="demo", type="disk", attrs=CDROM))
    ref = r["device"]["ref"]
    new = dict(CDROM, uname="file:/iso/b.iso")
    c = run(device, dict(uri=uri, domain="demo", type="disk", attrs=new), check=True)
    assert c["changed"] and c["op"] == "update" and disks(uri)[ref]["uname"] == "file:/iso/a.iso"
    u = run(device, dict(uri=uri, domain="demo", type="disk", attrs=new), diff=True)
    assert u["changed"] and u["op"] == "update" and u["device"]["ref"] == ref
    assert u["diff"]["before"]["uname"] == "file:/iso/a.iso" and u["diff"]["after"]["uname"] == "file:/iso/b.iso"
    assert disks(uri)[ref]["uname"] == "file:/iso/b.iso"  # the same device, not a new one
    assert not run(device, dict(uri=uri, domain="demo", type="disk", attrs=new))["changed"]


def test_absent_removes_then_changes_nothing(uri):
    ref = run(device, dict(uri=uri, domain="demo", type="disk", attrs=DISK))["device"]["ref"]
    gone = dict(uri=uri, domain="demo", type="disk", attrs={"dev": "xvdc"}, state="absent")
    c = run(device, gone, check=True)
    assert c["changed"] and ref in disks(uri)
    r = run(device, gone)
    assert r["changed"] and r["op"] == "remove" and r["device"] is None
    assert ref not in disks(uri)
    assert not run(device, gone)["changed"]


def test_pending_removal_is_reported_as_such(uri):
    ref = run(device, dict(uri=uri, domain="demo", type="disk", attrs=DISK))["device"]["ref"]
    gone = dict(uri=uri + "?removal=pending", domain="demo", type="disk", attrs={"dev": "xvdc"}, state="absent", timeout=0.2)
    r = run(device, gone)
    assert r["failed"] and r["code"] == "removal-pending" and r["removal_pending"] and r["changed"]
    assert r["device"]["ref"] == ref and r["device"]["state"] == "removal-pending"
    assert disks(uri)[ref]["_state"] == "removal-pending"
    r = run(device, dict(gone, fail_on_pending=False))
    assert not r["failed"] and r["removal_pending"] and r["changed"]


def test_replacement_is_refused_not_made(uri):
    ref = run(device, dict(uri=uri, domain="demo", type="disk", attrs=DISK))["device"]["ref"]
    r = run(device, dict(uri=uri, domain="demo", type="disk", attrs=dict(DISK, mode="r")))
    assert r["failed"] and r["code"] == "replace-required" and r["reason"]
    assert disks(uri)[ref]["mode"] == "w"


def test_errors_carry_vdev_codes(uri):
    r = run(device, dict(uri=uri, domain="nope", type="disk", attrs=DISK))
    assert r["failed"] and r["code"] == "domain-not-found" and "nope" in r["msg"]
    r = run(device, dict(uri="bogus:///x", domain="demo", type="disk", attrs=DISK))
    assert r["failed"] and r["code"] == "no-driver"


def test_missing_package_is_one_clear_message(uri, monkeypatch):
    monkeypatch.setattr(vdev_common, "HAS_VDEV", False)
    r = run(device, dict(uri=uri, domain="demo", type="disk", attrs=DISK))
    assert r["failed"] and r["code"] == "missing-package"
    assert "vdev.hotplug.install" in r["msg"]


def test_devices_plan_apply_exclusive(uri):
    doc = {"demo": {"devices": [dict(type="disk", attrs=DISK)]}}
    before = disks(uri)
    p = run(devices, dict(uri=uri, domains=doc, exclusive=["disk"]), check=True, diff=True)
    ops = sorted(c["op"] for c in p["changes"])
    assert p["changed"] and ops == ["add"] + ["remove"] * len(before)
    assert "outcome" not in p["changes"][0] and disks(uri) == before
    a = run(devices, dict(uri=uri, domains=doc, exclusive=["disk"]))
    assert a["changed"] and all(c["outcome"] == "done" for c in a["changes"])
    (left,) = disks(uri).values()
    assert left["uname"] == "file:/img/data.raw"
    again = run(devices, dict(uri=uri, domains=doc, exclusive=["disk"]))
    assert not again["changed"] and again["changes"] == []


def test_devices_from_a_file_and_invalid_documents(uri, tmp_path):
    f = tmp_path / "doc.json"
    f.write_text(json.dumps({"domains": {"demo": {"devices": [dict(type="disk", attrs={"dev": "xvdc"})]}}}))
    r = run(devices, dict(uri=uri, src=str(f)))
    assert r["failed"] and r["code"] == "invalid-document"


def test_info_lists_domains_and_devices(uri):
    r = run(info, dict(uri=uri))
    names = [d["name"] for d in r["domains"]]
    assert "demo" in names and r["driver"] == "mock"
    assert r["ansible_facts"]["vdev_domains"] == r["domains"]
    (demo,) = run(info, dict(uri=uri, domain="demo", type="disk", export=True))["domains"]
    assert set(d["ref"] for d in demo["devices"]) == set(disks(uri))
    assert "domains" in demo["document"]


def test_nic_link_is_one_update_in_place(uri):
    with vdev.connect(uri) as c:
        (nic,) = c.devices("demo", "network")
    down = dict(uri=uri, domain="demo", type="network", attrs={"mac": nic.attrs["mac"].upper(), "link": "down"})
    r = run(device, down)
    assert r["changed"] and r["op"] == "update" and r["device"]["ref"] == nic.ref
    with vdev.connect(uri) as c:
        (after,) = c.devices("demo", "network")
    assert after.ref == nic.ref and after.attrs["link"] == "down"
    assert not run(device, down)["changed"]
