# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The collection on a fleet: ansible-playbook against several managed hosts at once (each a real
sshd on loopback with its own real QEMU), and against the Xen lab's Domain-0 over ssh. Every
claim is checked with an independent client on every host: raw QMP on each QEMU's second socket,
xenstore-ls on the lab's xenstored.

The QEMU tests are one story on one fleet, in file order (each starts from the state the previous
one left); a failure early makes the later ones fail too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from conftest import skip_or_fail
from fleetlab import WAIT, Fleet, MissingPart

HOSTS = 3  # managed hosts at once (the benchmark runs 8)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    try:
        f = Fleet(tmp_path_factory.mktemp("fleet"), HOSTS, disks=3)
    except MissingPart as e:
        skip_or_fail(str(e))
    try:
        yield f
    finally:
        f.close()


def changed(run, fleet):
    """What changed on each host: the changed task results, each loop item one."""
    return {h.name: run.items_changed(h.name) for h in fleet.hosts}


def everywhere(fleet, n):
    return {h.name: n for h in fleet.hosts}


def test_without_the_package_a_module_says_how_to_install_it(fleet):
    h = fleet.hosts[0]
    run = fleet.adhoc(h.name, "vdev.hotplug.info", "uri=qemu://%s" % h.vm.sock)  # the system Python: no vdev
    assert run.rc != 0, run.stdout
    assert '"code": "missing-package"' in run.stdout and "vdev.hotplug.install" in run.stdout, run.stdout


def test_the_install_role_installs_once(fleet):
    first = fleet.playbook("install.yml")
    assert first.rc == 0, first
    assert all(c > 0 for c in changed(first, fleet).values()), first
    again = fleet.playbook("install.yml")
    assert again.rc == 0 and changed(again, fleet) == everywhere(fleet, 0), again
    for h in fleet.hosts:
        out = subprocess.run([str(h.dir / "venv" / "bin" / "python"), "-c", "import vdev; print(vdev.__file__)"],
                             capture_output=True, text=True, timeout=WAIT, check=True).stdout
        assert str(h.dir / "venv") in out


def test_the_first_run_attaches_and_the_second_changes_nothing(fleet):
    before = {h.name: h.vm.device_ids() for h in fleet.hosts}
    first = fleet.playbook("converge.yml", disks=2, medium="a")
    assert first.rc == 0, first
    assert changed(first, fleet) == everywhere(fleet, 3), first  # two disks and a CD-ROM drive
    for h in fleet.hosts:
        assert h.vm.device_ids() - before[h.name] == {"data0", "data1", "cd0"}
        assert h.vm.medium("data0") == str(h.dir / "data0.raw")
        assert h.vm.medium("cd0") == str(h.dir / "a.iso")
    again = fleet.playbook("converge.yml", disks=2, medium="a")
    assert again.rc == 0 and changed(again, fleet) == everywhere(fleet, 0), again
    for h in fleet.hosts:
        assert h.vm.device_ids() - before[h.name] == {"data0", "data1", "cd0"}


def test_check_mode_predicts_and_changes_nothing(fleet):
    ids = {h.name: h.vm.device_ids() for h in fleet.hosts}
    check = fleet.playbook("converge.yml", "--check", "--diff", disks=3, medium="b")
    assert check.rc == 0, check
    assert changed(check, fleet) == everywhere(fleet, 2), check  # data2 added, cd0's medium changed
    for h in fleet.hosts:
        (cd,) = check.results("CD-ROM drive", h.name)
        assert cd["op"] == "update" and cd["diff"]["after"]["source"] == str(h.dir / "b.iso")
        assert h.vm.device_ids() == ids[h.name]
        assert h.vm.medium("cd0") == str(h.dir / "a.iso")


def test_a_cdrom_medium_change_is_one_changed_update(fleet):
    ids = {h.name: h.vm.device_ids() for h in fleet.hosts}
    run = fleet.playbook("converge.yml", disks=2, medium="b")
    assert run.rc == 0 and changed(run, fleet) == everywhere(fleet, 1), run
    for h in fleet.hosts:
        (cd,) = run.results("CD-ROM drive", h.name)
        assert cd["changed"] and cd["op"] == "update" and cd["device"]["ref"] == "cd0"
        assert h.vm.device_ids() == ids[h.name]  # the same drive, not a new one
        assert h.vm.medium("cd0") == str(h.dir / "b.iso")


def test_absent_removes(fleet):
    run = fleet.playbook("converge.yml", disks=2, disk_state="absent", medium="b")
    assert run.rc == 0 and changed(run, fleet) == everywhere(fleet, 2), run
    for h in fleet.hosts:
        ids = h.vm.device_ids()
        assert "data0" not in ids and "data1" not in ids and "cd0" in ids
    again = fleet.playbook("converge.yml", disks=2, disk_state="absent", medium="b")
    assert again.rc == 0 and changed(again, fleet) == everywhere(fleet, 0), again


def test_a_host_whose_sshd_stops_mid_play_fails_alone(fleet):
    down = fleet.hosts[1]
    # Once every host has answered the play's first task, the sshd of one host and the
    # connections it serves go away (process ids: its children, then itself).
    kill = "sh -c 'pkill -KILL -P %d; kill -KILL %d'" % (down.sshd.proc.pid, down.sshd.proc.pid)
    run = fleet.playbook("converge.yml", disks=2, medium="b", fault_cmd=kill)
    down.sshd.proc.wait(WAIT)
    down.sshd.proc = None
    assert run.rc != 0, run
    assert run.stats[down.name]["unreachable"] >= 1 and run.items_changed(down.name) == 0, run
    for h in fleet.hosts:
        ids = h.vm.device_ids()
        if h is down:
            assert "data0" not in ids and "data1" not in ids
        else:
            assert run.stats[h.name]["failures"] == 0 and run.stats[h.name]["unreachable"] == 0, run
            assert run.items_changed(h.name) == 2, run
            assert {"data0", "data1"} <= ids
    down.sshd.start()
    again = fleet.playbook("converge.yml", disks=2, medium="b")
    assert again.rc == 0, again
    assert changed(again, fleet) == {h.name: (2 if h is down else 0) for h in fleet.hosts}, again
    assert {"data0", "data1"} <= down.vm.device_ids()


def test_a_document_for_every_host_plan_then_apply(fleet):
    """vdev.hotplug.devices (vdev's apply): check mode returns the plan and changes nothing; the
    apply makes it; again changes nothing; an empty document with disks exclusive removes them."""
    ids = {h.name: h.vm.device_ids() for h in fleet.hosts}
    plan = fleet.playbook("document.yml", "--check")
    assert plan.rc == 0 and changed(plan, fleet) == everywhere(fleet, 1), plan
    for h in fleet.hosts:
        (r,) = plan.results("Disks", h.name)
        # data0 and data1 are there (the previous tests made them), data2 is added, and cd0, the one
        # disk no entry names, is removed (disks are exclusive)
        assert sorted((c["op"], c["ref"]) for c in r["changes"]) == [("add", "data2"), ("remove", "cd0")], r
        assert h.vm.device_ids() == ids[h.name]
    run = fleet.playbook("document.yml")
    assert run.rc == 0 and changed(run, fleet) == everywhere(fleet, 1), run
    for h in fleet.hosts:
        now = h.vm.device_ids()
        assert now - ids[h.name] == {"data2"} and {"data0", "data1"} <= now and "cd0" not in now
    again = fleet.playbook("document.yml")
    assert again.rc == 0 and changed(again, fleet) == everywhere(fleet, 0), again
    empty = fleet.playbook("document.yml", disk_state="absent")
    assert empty.rc == 0 and changed(empty, fleet) == everywhere(fleet, 1), empty
    for h in fleet.hosts:
        assert not {"data0", "data1", "data2", "cd0"} & h.vm.device_ids()


def test_a_removal_the_guest_does_not_complete_is_reported_pending(fleet):
    """No guest OS acknowledges the ACPI unplug of a virtio-net NIC: the result says the removal is
    pending (a failure by default, a change with fail_on_pending=false), and the NIC is still
    there for QEMU."""
    h = fleet.hosts[0]
    add = fleet.playbook("nic.yml", "-l", h.name, state="present")
    assert add.rc == 0 and add.items_changed(h.name) == 1 and "nic0" in h.vm.device_ids(), add
    gone = fleet.playbook("nic.yml", "-l", h.name, state="absent")
    (r,) = gone.results("NIC", h.name)
    assert gone.rc != 0 and r["failed"] and r["code"] == "removal-pending" and r["removal_pending"], gone
    assert r["device"]["ref"] == "nic0" and r["device"]["state"] == "removal-pending", r
    assert "nic0" in h.vm.device_ids()
    again = fleet.playbook("nic.yml", "-l", h.name, state="absent", fail_on_pending=False)
    (r,) = again.results("NIC", h.name)
    assert again.rc == 0 and r["changed"] and r["removal_pending"] and not r.get("failed"), again
    assert "nic0" in h.vm.device_ids()


def test_from_the_controller_over_qemu_ssh(fleet):
    # The module on the controller, each host's QEMU reached with qemu+ssh:// through that host's
    # own sshd (its port, key and known_hosts), checked with raw QMP on every host.
    for h in fleet.hosts:
        with open(h.dir / "ctl0.raw", "wb") as f:
            f.truncate(1 << 20)
    ids = {h.name: h.vm.device_ids() for h in fleet.hosts}
    check = fleet.playbook("controller.yml", "--check", state="present")
    assert check.rc == 0 and changed(check, fleet) == everywhere(fleet, 1), check
    assert {h.name: h.vm.device_ids() for h in fleet.hosts} == ids
    first = fleet.playbook("controller.yml", state="present")
    assert first.rc == 0 and changed(first, fleet) == everywhere(fleet, 1), first
    for h in fleet.hosts:
        assert h.vm.device_ids() - ids[h.name] == {"ctl0"}
        assert h.vm.medium("ctl0") == str(h.dir / "ctl0.raw")
    again = fleet.playbook("controller.yml", state="present")
    assert again.rc == 0 and changed(again, fleet) == everywhere(fleet, 0), again
    gone = fleet.playbook("controller.yml", state="absent")
    assert gone.rc == 0 and changed(gone, fleet) == everywhere(fleet, 1), gone
    assert {h.name: h.vm.device_ids() for h in fleet.hosts} == ids


# The Xen lab's Domain-0 (tests/xenlab): its root has no Python, so the modules run on the
# controller with a xen+ssh:// URI (delegate_to: localhost), as the collection's docs describe.
XEN_DEV = "xvdzz"  # a device name no other test of the (shared) lab uses (they use xvdb..xvdz)
XEN_DEVID = (1 << 28) | (701 << 8)  # its virtual-device number (extended form: disk 701, partition 0)
XEN_IMG = "/root/vdev-ansible-xvdzz.img"


XEN_DOMU = "domu-ansible"  # a guest of its own, so that other tests' devices on the shared lab's domu1 do not matter


def xl(script, check=True):
    """Run a shell script in Domain-0 through the lab's own channel (not vdev, not its ssh)."""
    lab = os.environ.get("VDEV_ROOT", "") + "/tests/xenlab/xenlab"
    return subprocess.run([lab, "sh", script], capture_output=True, text=True, timeout=120, check=check).stdout


@pytest.fixture(scope="module")
def xen(tmp_path_factory):
    need = ("XENLAB_SSH_URI", "XENSTORED_PATH", "XENLAB_SSH_PORT", "XENLAB_SSH_KEY", "XENLAB_SSH_KNOWN_HOSTS")
    missing = [v for v in need if not os.environ.get(v)]
    if missing:
        skip_or_fail("the Xen lab is not up (%s unset; run `tests/xenlab/xenlab up`)" % ", ".join(missing))
    xl("xl destroy %s >/dev/null 2>&1 || true; truncate -s 8M %s; xl create /root/lab/domu1.cfg 'name=\"%s\"' >/dev/null 2>&1;"
       " xl domid %s" % (XEN_DOMU, XEN_IMG, XEN_DOMU, XEN_DOMU))
    try:
        yield XenLab(tmp_path_factory.mktemp("xen"))
    finally:
        xl("xl destroy %s; rm -f %s" % (XEN_DOMU, XEN_IMG), check=False)


class XenLab:
    def __init__(self, base):
        self.base = base
        self.domu = XEN_DOMU
        self.inventory = base / "inventory.ini"
        self.inventory.write_text(
            "[xen]\nxendom0 ansible_host=127.0.0.1 ansible_port=%s ansible_user=root ansible_ssh_private_key_file=%s"
            " ansible_ssh_common_args='-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ConnectTimeout=5'\n"
            % (os.environ["XENLAB_SSH_PORT"], os.environ["XENLAB_SSH_KEY"], os.environ["XENLAB_SSH_KNOWN_HOSTS"]))

    def play(self, *args, **extra):
        import json  # pylint: disable=import-outside-toplevel
        from fleetlab import HERE, Run  # pylint: disable=import-outside-toplevel

        env = dict(os.environ)
        env.update(ANSIBLE_COLLECTIONS_PATH=str(HERE.parents[6]), ANSIBLE_STDOUT_CALLBACK="fleet_json",
                   ANSIBLE_CALLBACK_PLUGINS=str(HERE / "callback_plugins"),
                   ANSIBLE_LOCAL_TEMP=str(self.base / "tmp"), ANSIBLE_DEPRECATION_WARNINGS="False")
        bin_dir = os.path.dirname(os.path.realpath(shutil.which("ansible-playbook") or "ansible-playbook"))
        cmd = [os.path.join(bin_dir, "ansible-playbook"), "-i", str(self.inventory), str(HERE / "xen.yml"), *args,
               "-e", json.dumps(dict(extra, xen_uri=os.environ["XENLAB_SSH_URI"] + "&timeout=60s", domu=self.domu, dev=XEN_DEV, img=XEN_IMG))]
        return Run(cmd, env)

    def disks(self):
        """{virtual-device number: frontend state} of the guest's disks, as `xl block-list` lists them."""
        out = xl("xl block-list %s" % self.domu)
        rows = [line.split() for line in out.splitlines()[1:]]
        return dict((int(r[0]), r[3]) for r in rows if r and r[0].isdigit())

    def wait_connected(self, devid):
        """Until the guest has connected the disk (frontend state 4), at most 120 s."""
        deadline = time.monotonic() + 120
        while self.disks().get(devid) != "4":
            assert time.monotonic() < deadline, "the guest did not connect disk %d: %s" % (devid, self.disks())
            time.sleep(1)


def test_xen_dom0_over_ssh(xen):
    before = xen.disks()
    assert XEN_DEVID not in before
    check = xen.play("--check", state="present")
    assert check.rc == 0 and check.items_changed("xendom0") == 1, check
    assert xen.disks() == before
    first = xen.play(state="present")
    assert first.rc == 0 and first.items_changed("xendom0") == 1, first
    assert XEN_DEVID in xen.disks()
    xen.wait_connected(XEN_DEVID)
    again = xen.play(state="present")
    assert again.rc == 0 and again.items_changed("xendom0") == 0, again
    gone = xen.play(state="absent")
    assert gone.rc == 0 and gone.items_changed("xendom0") == 1, gone
    assert xen.disks() == before
