# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The connection every vdev.hotplug module opens, and where it runs.
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - The vdev connection URI; it chooses the hypervisor and how it is reached.
      - C(qemu:///ABSOLUTE/PATH.qmp) (one running QEMU by its QMP socket) or C(qemu:///ABSOLUTE/DIR)
        (one domain per QMP socket in DIR), on the host running the module.
      - C(xen:///) (the local xenstored, in Domain-0) or C(xen+ssh://root@HOST/) (a Domain-0 over OpenSSH).
      - C(qemu+ssh://[USER@]HOST[:PORT]/PATH) (QEMU on a remote host over OpenSSH; use it with
        C(delegate_to=localhost) to drive hosts that have no vdev package).
      - C(mock:///default) (an in-memory test host), and C(libvirt+...) in builds with libvirt.
      - See the vdev README's URI table for every form and option.
    type: str
    required: true
requirements:
  - The C(vdev) Python package (the vdev project's C(crates/vdev-py)) in the Python that runs the
    module; the role M(vdev.hotplug.install) installs it from a wheel. Python 3.11 or later.
notes:
  - The module runs where Ansible runs modules. On the managed host it needs the C(vdev) package
    there; with C(delegate_to=localhost) and a C(+ssh) URI it runs on the controller, and the
    remote host needs only sshd and C(/bin/sh).
  - Errors are vdev's typed errors; the result's C(code) is the error's stable code (C(vdev.CODES)),
    for example C(domain-not-found), C(invalid-attribute), C(remote); C(missing-package) when the
    C(vdev) package is not installed where the module runs.
"""
