#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: device
short_description: Hot-plug, update or remove one virtual device of a running VM, idempotently
version_added: "0.1.0"
description:
  - Makes one device of one domain (VM) as described, on any hypervisor vdev drives (QEMU over
    QMP, Xen through XenStore, libvirt, the mock), through the C(vdev) Python package.
  - The device is found again by the driver's own identity (QEMU C(id), then C(source) or C(mac);
    Xen C(dev), then C(uname); C(mac) for NICs), never by a name the guest sees. Values are compared
    in the driver's normal form, so a value the hypervisor rewrites is no change.
  - Attributes the driver marks updatable (a CD-ROM's medium C(source), a NIC's C(link)) are
    changed in place; a difference in any other attribute is refused with code C(replace-required),
    never made by detaching and attaching again behind the user's back.
  - The decision is vdev's plan of a one-device desired-state document (C(vdev plan)); check mode
    returns that plan's prediction and changes nothing.
author:
  - The vdev authors (@vdev)
extends_documentation_fragment:
  - vdev.hotplug.connection
attributes:
  check_mode:
    support: full
    description: Plans with vdev and changes nothing; the result predicts C(changed), C(device) and C(diff).
  diff_mode:
    support: full
    description: The device's attributes before and after (C({}) where there is no device).
options:
  domain:
    description: The domain (VM), by name or id as vdev lists it.
    type: str
    required: true
  type:
    description: The device type (C(disk), C(network), ...; C(vdev schema) lists a driver's types).
    type: str
    required: true
  attrs:
    description:
      - The device's attributes, as C(vdev attach) takes them (C(vdev schema TYPE) lists them).
      - Values are passed as strings; YAML booleans become C(true)/C(false).
      - Only the attributes given are compared with the device's.
      - With O(state=absent), enough attributes to find the device (its identity), or O(id).
    type: dict
    default: {}
  id:
    description:
      - The device's reference. Finds the device by it; where the driver lets callers choose
        references (QEMU), a new device gets it.
    type: str
  state:
    description:
      - V(present) attaches the device if no device matches, updates updatable attributes that
        differ, and does nothing otherwise.
      - V(absent) detaches the matching device if there is one.
    type: str
    choices: [present, absent]
    default: present
  scope:
    description:
      - Where changes go, for drivers that have scopes (libvirt); the driver's default when unset.
        A driver without scopes refuses any other than its own with code C(unsupported).
    type: str
    choices: [live, persistent, both]
  timeout:
    description:
      - Seconds to wait for the guest to release a device being removed. When it has not, the
        result says so (RV(removal_pending)); removing again waits again.
    type: float
    default: 30
  fail_on_pending:
    description:
      - Whether a removal that the guest has not completed within O(timeout) fails the task
        (with code C(removal-pending)). With V(false) the task reports C(changed) with
        RV(removal_pending=true), so that a playbook can retry with C(until).
    type: bool
    default: true
seealso:
  - module: vdev.hotplug.devices
  - module: vdev.hotplug.info
"""

EXAMPLES = r"""
- name: A data disk on a QEMU VM (the managed host runs QEMU; its QMP socket is known)
  vdev.hotplug.device:
    uri: qemu:///run/vms/vm1.qmp
    domain: vm1
    type: disk
    attrs:
      source: /var/lib/vms/data.raw
      format: raw
      bus: scsi
    state: present

- name: Change the medium of a CD-ROM in place (one changed update, no detach)
  vdev.hotplug.device:
    uri: qemu:///run/vms/vm1.qmp
    domain: vm1
    type: disk
    id: cd0
    attrs:
      media: cdrom
      source: /isos/drivers.iso

- name: Take a NIC's link down
  vdev.hotplug.device:
    uri: qemu:///run/vms/vm1.qmp
    domain: vm1
    type: network
    attrs:
      mac: "52:54:00:12:34:56"
      link: down

- name: Remove a disk; retry while the guest has not released it yet
  vdev.hotplug.device:
    uri: qemu:///run/vms/vm1.qmp
    domain: vm1
    type: disk
    attrs:
      source: /var/lib/vms/data.raw
    state: absent
    timeout: 10
    fail_on_pending: false
  register: gone
  until: not gone.removal_pending
  retries: 5

- name: A disk on a Xen domain, driven from the controller over ssh (Domain-0 needs no Python)
  vdev.hotplug.device:
    uri: xen+ssh://root@dom0.example.org/
    domain: web1
    type: disk
    attrs:
      uname: file:/srv/xen/web1-data.img
      dev: xvdb
      mode: w
  delegate_to: localhost
"""

RETURN = r"""
changed:
  description: Whether the device was (or, in check mode, would be) attached, updated or removed.
  returned: always
  type: bool
device:
  description:
    - The device after the task (predicted in check mode; an added device's RV(device.ref) is
      then null where the driver chooses it). Null when there is no device (O(state=absent)).
  returned: success
  type: dict
  contains:
    type:
      description: The device type.
      type: str
      sample: disk
    ref:
      description: The device's reference, unique within the domain and type.
      type: str
      sample: disk-3f2a9c1b
    state:
      description: C(connected), or C(removal-pending) while the guest has not released it.
      type: str
      sample: connected
    attrs:
      description: The attributes as the hypervisor reports them.
      type: dict
      sample: {"source": "/var/lib/vms/data.raw", "format": "raw", "bus": "scsi"}
op:
  description: What was (or would be) done, C(add), C(update) or C(remove); null when nothing.
  returned: always
  type: str
  sample: update
removal_pending:
  description:
    - True when a removal was asked and the guest had not released the device within O(timeout); the
      device is still there, listed as C(removal-pending). Neither a success nor a crash;
      the task fails with code C(removal-pending) unless O(fail_on_pending=false).
  returned: always
  type: bool
  sample: false
code:
  description:
    - On failure, the stable code of vdev's error (C(vdev.CODES), for example C(domain-not-found),
      C(invalid-attribute), C(remote), C(removal-pending)), C(replace-required) when a
      non-updatable attribute differs, or C(missing-package) when vdev is not installed.
  returned: failure
  type: str
  sample: invalid-attribute
reason:
  description: With code C(replace-required), vdev's reason why the device would need replacing.
  returned: failure
  type: str
diff:
  description: The device's attributes before and after (diff mode).
  returned: when diff mode is on
  type: dict
  contains:
    before:
      description: The attributes before (C({}) when there was no device).
      type: dict
    after:
      description: The attributes after (C({}) when there is no device).
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vdev.hotplug.plugins.module_utils.vdev_common import (
    CONNECTION_ARGS,
    SCOPES,
    connect,
    device_dict,
    fail_vdev,
    str_attrs,
    vdev,
)


def find_device(conn, domain, dtype, ref):
    for d in conn.devices(domain, dtype):
        if d.ref == ref:
            return device_dict(d)
    return None


def matched_device(conn, doc, domain, dtype):
    """The device vdev's identity matches with the one entry, when the plan changes nothing.

    The same entry planned with its type ``exclusive`` removes every device of the type that the
    entry does not match: the one left is the match. Only planned, never applied.
    """
    ddoc = dict(doc["domains"][domain])
    ddoc["exclusive"] = [dtype]
    plan = conn.plan({"domains": {domain: ddoc}})
    removed = set(c.ref for c in plan if c.op == "remove" and c.entry is None)
    left = [d for d in conn.devices(domain, dtype) if d.ref not in removed]
    if len(left) == 1:
        return device_dict(left[0])
    return None


def main():
    argument_spec = dict(CONNECTION_ARGS)
    argument_spec.update(
        domain=dict(type="str", required=True),
        type=dict(type="str", required=True),
        attrs=dict(type="dict", default={}),
        id=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        scope=dict(type="str", choices=SCOPES),
        timeout=dict(type="float", default=30),
        fail_on_pending=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    domain, dtype, state = p["domain"], p["type"], p["state"]

    entry = {"type": dtype, "attrs": str_attrs(p["attrs"])}
    if p["id"] is not None:
        entry["id"] = p["id"]
    if state == "absent":
        entry["state"] = "absent"
    doc = {"domains": {domain: {"devices": [entry]}}}

    conn = connect(module)
    result = dict(changed=False, op=None, removal_pending=False, device=None)
    try:
        plan = conn.plan(doc)
        mine = [c for c in plan if c.entry == 0]
        change = mine[0] if mine else None
        if change is not None and change.ref is not None:
            before = find_device(conn, domain, dtype, change.ref)
        elif change is None and state == "present":
            before = matched_device(conn, doc, domain, dtype)
        else:
            before = None

        if change is not None and change.op == "replace":
            result["device"] = before
            module.fail_json(
                msg="%s %s of %s differs in an attribute that cannot change in place (%s);"
                " vdev does not replace devices silently: remove it (state=absent) and add it again"
                % (dtype, change.ref, domain, change.reason),
                code="replace-required",
                reason=change.reason,
                **result
            )

        if change is None:
            after = before if state == "present" else None
        elif change.op == "add":
            result["op"] = "add"
            after = dict(type=dtype, ref=change.ref or p["id"], state="connected", attrs=dict(change.attrs))
        elif change.op == "update":
            result["op"] = "update"
            after = dict(before or dict(type=dtype, ref=change.ref, state="connected", attrs={}))
            attrs = dict(after["attrs"])
            attrs.update(change.attrs)
            after["attrs"] = attrs
        else:  # remove
            result["op"] = "remove"
            after = None
        result["changed"] = change is not None

        if change is not None and not module.check_mode:
            report = conn.apply(doc, timeout=p["timeout"], scope=p["scope"], check=False)
            result["changed"] = report.changed
            if report.error is not None:
                fail_vdev(module, report.error, "%s %s of %s" % (result["op"], dtype, domain), **result)
            applied = [a for a in report.changes if a.change.entry == 0]
            if not applied:  # another client made it so between the plan and the apply
                result["op"] = None
            else:
                a = applied[0]
                ref = a.change.ref
                after = find_device(conn, domain, dtype, ref) if ref is not None else None
                if a.outcome == "removal-pending":
                    result["removal_pending"] = True
        result["device"] = after
        if module._diff:
            result["diff"] = dict(
                before=(before or {}).get("attrs", {}),
                after=(after or {}).get("attrs", {}),
            )
    except vdev.Error as e:
        fail_vdev(module, e, "%s of %s" % (dtype, domain), **result)
    finally:
        conn.close()

    if result["removal_pending"] and p["fail_on_pending"]:
        module.fail_json(
            msg="the removal of %s %s of %s is pending: the guest has not released it within %s s;"
            " it is still there, listed as removal-pending (run again to wait again, or set"
            " fail_on_pending=false to retry with until)" % (dtype, result["device"]["ref"] if result["device"] else "", domain, p["timeout"]),
            code="removal-pending",
            **result
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
