#!/usr/bin/env python3
"""libvirt's side of the media-change benchmark (run by benches/qemu.rs).

Usage: libvirt_media.py URI DOMAIN ISO_A ISO_B RUNS

Pauses DOMAIN (as the QEMU vdev is measured on runs paused: -S) and hot-plugs a SCSI CD-ROM
drive holding ISO_A into it (through libvirtd, whose URI is URI),
then swaps its medium between ISO_B and ISO_A RUNS times with virDomainUpdateDeviceFlags (LIVE),
timing each call in-process, and prints one JSON object: {"median_ms": ..., "runs": RUNS}.
The drive is detached again at the end.
"""
import json
import statistics
import sys
import time

import libvirt

CDROM = """<disk type='file' device='cdrom'>
  <driver name='qemu' type='raw'/>
  <source file='{src}'/>
  <target dev='sdb' bus='scsi'/>
  <address type='drive' controller='0' bus='0' target='0' unit='1'/>
  <readonly/>
</disk>"""


def main():
    uri, name, a, b, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    conn = libvirt.open(uri)
    dom = conn.lookupByName(name)
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    # Paused, as vdev's QEMU is (-S). Even so, a plain LIVE update fails here with "Tray of
    # device ... is not open" (measured: the domain's firmware has run and locked the tray),
    # the trap libvirt's users report; the FORCE flag opens it anyway, as vdev's force=true does.
    dom.suspend()
    dom.attachDeviceFlags(CDROM.format(src=a), live)
    flags = live | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
    times = []
    try:
        for i in range(runs):
            src = b if i % 2 == 0 else a
            t = time.perf_counter()
            dom.updateDeviceFlags(CDROM.format(src=src), flags)
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        try:
            dom.detachDeviceFlags(CDROM.format(src=a), live)
        except libvirt.libvirtError:
            pass
    print(json.dumps({"median_ms": statistics.median(times), "runs": runs}))


if __name__ == "__main__":
    main()
