# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Benchmark: converge 8 managed hosts (a real sshd and QEMU each, as the fleet test makes them)
with 4 disks each in one play, and the no-change re-run, beside `ansible -m ping` over the same
hosts in the same run (Ansible's own floor). Medians of ROUNDS rounds; each round starts from
VMs without data disks. Not part of the test command.

    VDEV_WHEEL=target/wheels/vdev-*.whl target/ansible-venv/bin/python \\
        ansible/ansible_collections/vdev/hotplug/tests/bench/fleet_bench.py [ROUNDS] [HOSTS] [DISKS]
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration" / "targets" / "fleet"))

from fleetlab import Fleet  # noqa: E402  pylint: disable=wrong-import-position


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    hosts = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    disks = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    play = "document.yml"  # beside fleetlab.py
    with tempfile.TemporaryDirectory(prefix="vdev-fleet-bench-") as d:
        fleet = Fleet(pathlib.Path(d), hosts, disks=disks)
        try:
            inst = fleet.playbook("install.yml")
            assert inst.rc == 0, inst
            times = {"ping": [], "converge": [], "no-change": []}
            for r in range(rounds):
                ping = fleet.adhoc("qemu", "ping")
                assert ping.rc == 0, ping.stdout[-2000:] + ping.stderr[-2000:]
                first = fleet.playbook(play)
                assert first.rc == 0 and all(first.changed(h.name) == 1 for h in fleet.hosts), first
                for h in fleet.hosts:
                    assert {"data%d" % n for n in range(disks)} <= h.vm.device_ids()
                again = fleet.playbook(play)
                assert again.rc == 0 and all(again.changed(h.name) == 0 for h in fleet.hosts), again
                reset = fleet.playbook(play, disk_state="absent")
                assert reset.rc == 0, reset
                times["ping"].append(ping.seconds)
                times["converge"].append(first.seconds)
                times["no-change"].append(again.seconds)
                print("round %d: ping %.2f s, converge %.2f s, no-change %.2f s" % (r + 1, ping.seconds, first.seconds, again.seconds),
                      flush=True)
        finally:
            fleet.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\n%d hosts, %d disks each, %d rounds, medians (load average %s):" % (hosts, disks, rounds, os.getloadavg()))
    print("| run | median s | vs ping |\n|---|---|---|")
    for k in ("ping", "converge", "no-change"):
        print("| %s | %.2f | %.2fx |" % (k, med[k], med[k] / med["ping"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
