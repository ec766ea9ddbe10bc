#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: info
short_description: List the domains (VMs) of a hypervisor and their devices, as facts
version_added: "0.1.0"
description:
  - Lists the domains vdev sees through O(uri), with each domain's devices (type, reference,
    state, attributes), as C(vdev devices) does.
  - Returns them as RV(domains) and as the fact C(vdev_domains).
author:
  - The vdev authors (@vdev)
extends_documentation_fragment:
  - vdev.hotplug.connection
attributes:
  check_mode:
    support: full
    description: Reads only; the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so has no diff.
options:
  domain:
    description: Only this domain (by name or id); every domain when unset.
    type: str
  type:
    description: Only devices of this type.
    type: str
  export:
    description: Also return each domain's desired-state document (C(vdev export)) as RV(domains[].document).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: The devices of every VM on the host
  vdev.hotplug.info:
    uri: qemu:///run/vms
  register: vms

- name: The disks of web1 on a Xen host, from the controller
  vdev.hotplug.info:
    uri: xen+ssh://root@dom0.example.org/
    domain: web1
    type: disk
  delegate_to: localhost

- ansible.builtin.debug:
    msg: "{{ vdev_domains | map(attribute='name') | list }}"
"""

RETURN = r"""
driver:
  description: The vdev driver that served the URI.
  returned: always
  type: str
  sample: qemu
domains:
  description: The domains, each with its devices.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The domain's name.
      type: str
    id:
      description: Its numeric id, where the hypervisor has one.
      type: int
    uuid:
      description: Its UUID, where the hypervisor has one.
      type: str
    state:
      description: C(running), C(paused), C(shut-off), ... or C(unknown).
      type: str
    devices:
      description: Its devices, each C({type, ref, state, attrs}).
      type: list
      elements: dict
    document:
      description: Its desired-state document (with O(export)).
      type: dict
ansible_facts:
  description: The same list as the fact C(vdev_domains).
  returned: always
  type: dict
  contains:
    vdev_domains:
      description: The same as RV(domains).
      type: list
      elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vdev.hotplug.plugins.module_utils.vdev_common import (
    CONNECTION_ARGS,
    connect,
    device_dict,
    fail_vdev,
    vdev,
)


def main():
    argument_spec = dict(CONNECTION_ARGS)
    argument_spec.update(
        domain=dict(type="str"),
        type=dict(type="str"),
        export=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    conn = connect(module, readonly=True)
    domains = []
    try:
        doms = [conn.domain(p["domain"])] if p["domain"] is not None else conn.domains()
        for d in doms:
            entry = dict(
                name=d.name,
                id=d.id,
                uuid=d.uuid,
                state=d.state,
                devices=[device_dict(x) for x in conn.devices(d, p["type"])],
            )
            if p["export"]:
                entry["document"] = conn.export(d)
            domains.append(entry)
        driver = conn.driver
    except vdev.Error as e:
        fail_vdev(module, e, "list")
    finally:
        conn.close()
    module.exit_json(changed=False, driver=driver, domains=domains, ansible_facts=dict(vdev_domains=domains))


if __name__ == "__main__":
    main()
