#!/usr/bin/env python3
"""Measure a guest-locked CD-ROM tray (vdev_guest.holdcd) over QMP (standard library only).

    eval "$(tests/qemu-guest/guest build)"; export GUEST_KERNEL GUEST_INITRD
    tests/qemu-guest/cdlock.py [--empty]

Boots the guest with virtio-scsi-pci (id scsi0), waits for READY, hot-plugs a scsi-cd cd0
(with a 1 MiB raw medium, or with no drive at all with --empty), waits for "CD HELD", then
tries blockdev-open-tray without and with force and blockdev-remove-medium, printing QEMU's
answers, the events and the timings (wall clock).
"""
import json, os, subprocess, sys, tempfile, time
from measure import Qmp, err

HERE = os.path.dirname(os.path.abspath(__file__))
READY, HELD = b"VDEV-GUEST: READY", b"VDEV-GUEST: CD HELD"


def wait_log(log, line, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(log, "rb") as f:
            if line in f.read():
                return True
        time.sleep(0.05)
    return False


def cd0(q):
    for b in q.cmd("query-block")["return"]:
        if b.get("qdev") in ("cd0", "/machine/peripheral/cd0/virtio-backend") or b.get("qdev", "").endswith("/cd0"):
            return {k: b.get(k) for k in ("device", "qdev", "locked", "tray_open", "removable")} | {
                "medium": (b.get("inserted") or {}).get("node-name")}
    return None


def main():
    empty = "--empty" in sys.argv
    d = tempfile.mkdtemp(prefix="vdev-cd-")
    sock, log, iso = f"{d}/qmp.sock", f"{d}/serial.log", f"{d}/x.iso"
    with open(iso, "wb") as f:
        f.truncate(1 << 20)
    append = subprocess.check_output([f"{HERE}/guest", "append"], text=True).strip() + " vdev_guest.holdcd"
    qemu = subprocess.Popen(["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-smp", "1", "-m", "256",
                             "-nodefaults", "-display", "none", "-no-reboot",
                             "-kernel", os.environ["GUEST_KERNEL"], "-initrd", os.environ["GUEST_INITRD"],
                             "-append", append, "-serial", f"file:{log}",
                             "-qmp", f"unix:{sock},server=on,wait=off", "-device", "virtio-scsi-pci,id=scsi0"])
    try:
        t0 = time.monotonic()
        while not os.path.exists(sock):
            time.sleep(0.02)
        q = Qmp(sock)
        if not wait_log(log, READY, 120):
            sys.exit("no READY")
        print(f"READY after {time.monotonic() - t0:.1f} s", flush=True)
        dev = {"driver": "scsi-cd", "id": "cd0", "bus": "scsi0.0"}
        if not empty:
            print("blockdev-add:", err(q.cmd("blockdev-add", driver="raw", **{"node-name": "cd1"}, **{"read-only": True},
                                             file={"driver": "file", "filename": iso, "read-only": True})))
            dev["drive"] = "cd1"
        t1 = time.monotonic()
        print("device_add:", err(q.cmd("device_add", **dev)), flush=True)
        held = wait_log(log, HELD, 30 if not empty else 15)
        print(f"CD HELD: {held} after {time.monotonic() - t1:.2f} s", flush=True)
        print("query-block cd0:", cd0(q))
        for i in range(int(os.environ.get("CD_POLL", "0"))):
            time.sleep(1); print(f"  +{i+1}s query-block cd0:", cd0(q))
        t2 = time.monotonic()
        print("blockdev-open-tray (no force):", json.dumps(q.cmd("blockdev-open-tray", id="cd0")), flush=True)
        ev = q.wait_event("DEVICE_TRAY_MOVED", timeout=5)
        print(f"  DEVICE_TRAY_MOVED within 5 s: {json.dumps(ev and ev['data'])}")
        print("  query-block cd0:", cd0(q))
        print("blockdev-remove-medium:", json.dumps(q.cmd("blockdev-remove-medium", id="cd0")))
        print("blockdev-open-tray force:", json.dumps(q.cmd("blockdev-open-tray", id="cd0", force=True)), flush=True)
        ev = q.wait_event("DEVICE_TRAY_MOVED", timeout=5)
        print(f"  DEVICE_TRAY_MOVED within 5 s: {json.dumps(ev and ev['data'])}")
        print("  query-block cd0:", cd0(q))
        print("blockdev-remove-medium:", json.dumps(q.cmd("blockdev-remove-medium", id="cd0")))
        print("  query-block cd0:", cd0(q))
        time.sleep(1)
        with open(log, "rb") as f:
            print("serial log VDEV lines:", [l.strip().decode(errors="replace") for l in f if b"VDEV" in l or b"sr" in l[:40]])
    finally:
        qemu.kill(); qemu.wait()


if __name__ == "__main__":
    main()
