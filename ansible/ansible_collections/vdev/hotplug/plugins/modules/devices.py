#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: devices
short_description: Make the devices of one or more VMs as a desired-state document says (vdev apply)
version_added: "0.1.0"
description:
  - Reconciles the devices of one or more domains with vdev's desired-state document, as
    C(vdev apply) does; the document's schema is vdev's (its design note 0016 and README).
  - Removals, in-place updates and additions are made; a device whose non-updatable attribute
    differs is reported as a C(replace) change that is never made (outcome C(not-made)), and the
    task then fails with code C(replace-required) unless O(fail_on_replace=false).
  - In check mode the result is vdev's plan, and nothing changes.
author:
  - The vdev authors (@vdev)
extends_documentation_fragment:
  - vdev.hotplug.connection
attributes:
  check_mode:
    support: full
    description: Returns vdev's plan (RV(changes)) and changes nothing.
  diff_mode:
    support: full
    description: The plan's lines (as C(vdev plan) prints them) as the diff.
options:
  domains:
    description:
      - The document's C(domains) mapping, domain name to C({devices, exclusive}) (vdev's schema;
        each device C({type, id, state, attrs})). Exactly one of O(domains) and O(src).
    type: dict
  src:
    description:
      - The path of a JSON or YAML desired-state document on the host running the module (errors
        then name its line and column). Exactly one of O(domains) and O(src).
    type: path
  exclusive:
    description:
      - Device types that are exclusive in every domain of O(domains) (added to each domain's own
        C(exclusive)), so that a device of such a type that no entry matches is removed. With O(src), the
        file says it.
    type: list
    elements: str
    default: []
  scope:
    description: Where changes go, for drivers that have scopes (libvirt); the driver's default when unset.
    type: str
    choices: [live, persistent, both]
  timeout:
    description: Seconds each removal waits for the guest to release the device.
    type: float
    default: 30
  fail_on_pending:
    description:
      - Whether removals the guest has not completed within O(timeout) fail the task (code
        C(removal-pending)); otherwise they are reported in RV(pending) and the task is C(changed).
    type: bool
    default: true
  fail_on_replace:
    description: Whether a planned replacement (never made) fails the task (code C(replace-required)).
    type: bool
    default: true
seealso:
  - module: vdev.hotplug.device
"""

EXAMPLES = r"""
- name: Every VM of this host has exactly these disks, and its NIC up
  vdev.hotplug.devices:
    uri: qemu:///run/vms
    domains:
      vm1:
        devices:
          - {type: disk, id: data0, attrs: {source: /var/lib/vms/vm1-data0.raw, format: raw, bus: scsi}}
          - {type: disk, id: cd0, attrs: {media: cdrom, source: /isos/tools.iso}}
          - {type: network, attrs: {mac: "52:54:00:12:34:56", link: up}}
    exclusive: [disk]

- name: Plan only (check mode), and show the plan
  vdev.hotplug.devices:
    uri: qemu:///run/vms
    src: /etc/vdev/devices.yaml
  check_mode: true
  register: plan

- ansible.builtin.debug:
    var: plan.changes
"""

RETURN = r"""
changed:
  description: Whether something was made or asked (a pending removal counts); in check mode, whether the plan has changes.
  returned: always
  type: bool
changes:
  description:
    - Each change of the plan (check mode) or of the apply, with its outcome, in the order vdev
      makes them (removals, updates, replacements, additions).
  returned: always
  type: list
  elements: dict
  contains:
    op:
      description: C(add), C(remove), C(update), or C(replace) (reported, never made).
      type: str
    domain:
      description: The domain as the document names it.
      type: str
    type:
      description: The device type.
      type: str
    ref:
      description: The device's reference (an add's, once made; null in a plan where the driver chooses it).
      type: str
    attrs:
      description: An add's attributes, an update's new values, a replacement's differing values, a removal's listed attributes.
      type: dict
    entry:
      description: The index of the document entry in its domain's C(devices); null for the removal of a device of an exclusive type.
      type: int
    reason:
      description: Why a replacement is needed (C(replace) only).
      type: str
    outcome:
      description: C(done), C(removal-pending), C(not-made), C(failed) or C(not-tried); absent in check mode.
      type: str
    error:
      description: The failure of a C(failed) change, C({code, msg}).
      type: dict
  sample:
    - {"op": "add", "domain": "vm1", "type": "disk", "ref": "data0", "attrs": {"source": "/var/lib/vms/vm1-data0.raw"},
       "entry": 0, "reason": null, "outcome": "done"}
pending:
  description: How many removals the guests had not completed within O(timeout) (apply again to wait again).
  returned: always
  type: int
  sample: 0
code:
  description: On failure, the stable code of vdev's error, C(replace-required), C(removal-pending) or C(missing-package).
  returned: failure
  type: str
  sample: invalid-document
diff:
  description: The plan as C(vdev plan) prints it (after), one line per change.
  returned: when diff mode is on
  type: dict
"""

import copy

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vdev.hotplug.plugins.module_utils.vdev_common import (
    CONNECTION_ARGS,
    SCOPES,
    applied_dict,
    change_dict,
    connect,
    fail_vdev,
    str_attrs,
    vdev,
)


def build_document(module):
    p = module.params
    if p["src"] is not None:
        if p["exclusive"]:
            module.fail_json(
                msg="exclusive is for a document given as domains; with src, write exclusive in the file",
                code="invalid-document",
            )
        return p["src"]  # read by vdev itself: its errors name the file, line and column
    domains = p["domains"]
    if not isinstance(domains, dict):
        module.fail_json(msg="the document has no domains mapping", code="invalid-document")
    out = {}
    for name, ddoc in domains.items():
        ddoc = copy.deepcopy(ddoc) if isinstance(ddoc, dict) else ddoc
        if isinstance(ddoc, dict):
            for dev in ddoc.get("devices") or []:
                if isinstance(dev, dict) and isinstance(dev.get("attrs"), dict):
                    dev["attrs"] = str_attrs(dev["attrs"])
            if p["exclusive"]:
                ddoc["exclusive"] = sorted(set(ddoc.get("exclusive") or []) | set(p["exclusive"]))
        out[str(name)] = ddoc
    return {"domains": out}


def main():
    argument_spec = dict(CONNECTION_ARGS)
    argument_spec.update(
        domains=dict(type="dict"),
        src=dict(type="path"),
        exclusive=dict(type="list", elements="str", default=[]),
        scope=dict(type="str", choices=SCOPES),
        timeout=dict(type="float", default=30),
        fail_on_pending=dict(type="bool", default=True),
        fail_on_replace=dict(type="bool", default=True),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_one_of=[("domains", "src")],
        mutually_exclusive=[("domains", "src")],
    )
    p = module.params
    doc = build_document(module)
    conn = connect(module)
    result = dict(changed=False, changes=[], pending=0)
    try:
        plan = conn.plan(doc)
        lines = [str(c) for c in plan]
        if module._diff:
            result["diff"] = dict(before="", after="".join(line + "\n" for line in lines))
        replaces = [c for c in plan if c.op == "replace"]
        if module.check_mode:
            result["changes"] = [change_dict(c) for c in plan]
            result["changed"] = any(c.op != "replace" for c in plan)
        elif plan:
            report = conn.apply(doc, timeout=p["timeout"], scope=p["scope"], check=False)
            result["changes"] = [applied_dict(a) for a in report.changes]
            result["changed"] = report.changed
            result["pending"] = report.pending
            if report.error is not None:
                fail_vdev(module, report.error, "apply", **result)
    except vdev.Error as e:
        fail_vdev(module, e, "apply", **result)
    finally:
        conn.close()

    if replaces and p["fail_on_replace"]:
        module.fail_json(
            msg="%d device(s) differ in attributes that cannot change in place and are not replaced: %s"
            % (len(replaces), "; ".join("%s (%s)" % (c, c.reason) for c in replaces)),
            code="replace-required",
            **result
        )
    if result["pending"] and p["fail_on_pending"] and not module.check_mode:
        module.fail_json(
            msg="%d removal(s) pending: the guest has not released the device(s) within %s s; they are"
            " still there, listed as removal-pending (run again to wait again)" % (result["pending"], p["timeout"]),
            code="removal-pending",
            **result
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
