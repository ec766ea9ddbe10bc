# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""What the vdev.hotplug modules share: importing vdev, connecting, mapping vdev's typed errors
to fail_json, and turning vdev's objects into plain data for results.

The modules interpret no attribute themselves: identity, comparison and which attributes are
updatable are vdev's (its plan), so that a module's idea of "changed" is exactly vdev's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    import vdev

    HAS_VDEV = True
    VDEV_IMPORT_ERROR = None
except ImportError:
    vdev = None
    HAS_VDEV = False
    VDEV_IMPORT_ERROR = traceback.format_exc()

INSTALL_HINT = (
    "The vdev.hotplug modules run where Ansible runs modules (the managed host, or the controller"
    " with delegate_to: localhost) and need vdev's Python package there. Install it with the role"
    " vdev.hotplug.install (from a wheel built once with `maturin build` in crates/vdev-py), or"
    " `pip install vdev-*.whl` into the Python that runs the module (ansible_python_interpreter)."
)

SCOPES = ["live", "persistent", "both"]

# Arguments every module that connects takes (documented in the doc fragment vdev.hotplug.connection).
CONNECTION_ARGS = dict(
    uri=dict(type="str", required=True),
)


def require_vdev(module):
    """Fail with one clear message when the vdev package is missing on the host running the module."""
    if not HAS_VDEV:
        module.fail_json(
            msg=missing_required_lib("vdev (the Python package of the vdev project)") + " " + INSTALL_HINT,
            code="missing-package",
            exception=VDEV_IMPORT_ERROR,
        )


def fail_vdev(module, err, what, **extra):
    """fail_json for a vdev.Error: its code (vdev.CODES) and message, plus what was being done."""
    code = getattr(err, "code", None)
    result = dict(extra)
    if getattr(err, "index", None) is not None:
        result["index"] = err.index
    module.fail_json(msg="%s: %s" % (what, err), code=code, **result)


def connect(module, readonly=False):
    """Open a connection to the module's uri, or fail with vdev's code and message."""
    require_vdev(module)
    uri = module.params["uri"]
    try:
        return vdev.connect(uri, readonly=readonly)
    except vdev.Error as e:
        fail_vdev(module, e, "cannot connect to %s" % uri)


def device_dict(dev):
    """A listed device as plain data."""
    return dict(type=dev.type, ref=dev.ref, state=dev.state, attrs=dict(dev.attrs))


def change_dict(change):
    """A planned change as plain data (the fields of `vdev plan --json`)."""
    return dict(
        op=change.op,
        domain=change.domain,
        type=change.type,
        ref=change.ref,
        attrs=dict(change.attrs),
        entry=change.entry,
        reason=change.reason,
    )


def applied_dict(applied):
    """A change of an apply with its outcome (the fields of `vdev apply --json`)."""
    d = change_dict(applied.change)
    d["outcome"] = applied.outcome
    err = applied.error
    if err is not None:
        d["error"] = dict(code=getattr(err, "code", None), msg=str(err))
    return d


def str_attrs(attrs):
    """Attribute values as the strings vdev takes (YAML may give numbers or booleans).

    Booleans become ``true``/``false`` (vdev accepts the four spellings of a boolean); everything
    else is ``str()``: no value is interpreted here.
    """
    out = {}
    for k, v in (attrs or {}).items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif v is None:
            v = ""
        out[str(k)] = str(v)
    return out
