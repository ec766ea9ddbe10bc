# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The test's stdout callback: every task result and the play recap as one JSON document (the
shape of ansible.posix.json, which ansible-core alone does not have)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "fleet_json"

    def __init__(self):
        super(CallbackModule, self).__init__()
        self.tasks = []
        self.by_uuid = {}

    def _task(self, task):
        t = self.by_uuid.get(task._uuid)
        if t is None:
            t = {"task": {"name": task.get_name()}, "hosts": {}}
            self.by_uuid[task._uuid] = t
            self.tasks.append(t)
        return t

    def _record(self, result, **extra):
        r = dict(result._result)
        r.update(extra)
        self._task(result._task)["hosts"][result._host.get_name()] = json.loads(json.dumps(r, default=str))

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        out = {}
        for h in sorted(stats.processed.keys()):
            s = stats.summarize(h)
            out[h] = dict(ok=s["ok"], changed=s["changed"], failures=s["failures"], unreachable=s["unreachable"],
                          skipped=s["skipped"])
        self._display.display(json.dumps({"plays": [{"tasks": self.tasks}], "stats": out}))
