#!/usr/bin/env python3
"""Measure PCI hot-unplug timings against the vdev test guest (standard library only).

    eval "$(tests/qemu-guest/guest build)"; export GUEST_KERNEL GUEST_INITRD
    tests/qemu-guest/measure.py acpi|native [--nomod] [--smp N] [--mem MiB]

Boots the guest under QEMU (TCG, q35), waits for the READY line on the serial log, then
hot-plugs and unplugs virtio-blk-pci and virtio-net-pci on pcie-root-ports through QMP and
prints what QEMU answered and how long each step took (wall clock).
"""
import json, os, select, socket, subprocess, sys, tempfile, time

READY = b"VDEV-GUEST: READY"
HERE = os.path.dirname(os.path.abspath(__file__))


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""
        self.events = []
        self._line(None)  # greeting
        self.cmd("qmp_capabilities")

    def _line(self, timeout):
        """The next JSON line, or None after timeout seconds (None: wait forever)."""
        end = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if end is None else max(0.0, end - time.monotonic())
            if not select.select([self.s], [], [], left)[0]:
                return None
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("QMP closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def _read(self, timeout=None):
        msg = self._line(timeout)
        if msg is not None and "event" in msg:
            msg["_t"] = time.monotonic()
            self.events.append(msg)
            print(f"    event {msg['event']} {json.dumps(msg.get('data', {}))}", flush=True)
        return msg

    def cmd(self, name, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.s.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self._read()
            if "return" in msg or "error" in msg:
                return msg

    def wait_event(self, name, device=None, timeout=60.0):
        end = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name and (device is None or e.get("data", {}).get("device") == device):
                    return self.events.pop(i)
            left = end - time.monotonic()
            if left <= 0 or self._read(left) is None:
                return None


def err(r):
    return r["error"]["desc"] if "error" in r else "ok"


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "acpi"
    nomod = "--nomod" in sys.argv
    smp = sys.argv[sys.argv.index("--smp") + 1] if "--smp" in sys.argv else "1"
    mem = sys.argv[sys.argv.index("--mem") + 1] if "--mem" in sys.argv else "256"
    d = tempfile.mkdtemp(prefix="vdev-guest-")
    sock, log, img = f"{d}/qmp.sock", f"{d}/serial.log", f"{d}/disk.img"
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    append = subprocess.check_output([f"{HERE}/guest", "append"], text=True).strip()
    if nomod:
        append += " vdev_guest.nomod"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-smp", smp, "-m", mem,
            "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", os.environ["GUEST_KERNEL"], "-initrd", os.environ["GUEST_INITRD"],
            "-append", append, "-serial", f"file:{log}",
            "-qmp", f"unix:{sock},server=on,wait=off"]
    if mode == "native":
        argv += ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]
    for i in range(1, 7):
        argv += ["-device", f"pcie-root-port,id=rp{i},chassis={i},slot={i}"]
    argv += ["-device", "virtio-scsi-pci,id=scsi0"]
    print(f"mode={mode} smp={smp} mem={mem} nomod={nomod}\n  {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    q = subprocess.Popen(argv)
    try:
        while not os.path.exists(sock):
            time.sleep(0.01)
        qmp = Qmp(sock)
        while True:
            if q.poll() is not None:
                raise SystemExit(f"qemu exited {q.returncode}")
            if os.path.exists(log) and READY in open(log, "rb").read():
                break
            if time.monotonic() - t0 > 300:
                raise SystemExit("no READY in 300 s")
            time.sleep(0.05)
        print(f"READY after {time.monotonic() - t0:.2f} s", flush=True)

        def plug_blk(n, bus):
            r = qmp.cmd("blockdev-add", **{"driver": "raw", "node-name": f"blk{n}",
                        "file": {"driver": "file", "filename": img}})
            assert "return" in r, r
            return qmp.cmd("device_add", driver="virtio-blk-pci", id=f"vblk{n}", drive=f"blk{n}", bus=bus)

        def plug_net(n, bus):
            r = qmp.cmd("netdev_add", type="user", id=f"net{n}")
            assert "return" in r, r
            return qmp.cmd("device_add", driver="virtio-net-pci", id=f"vnet{n}", netdev=f"net{n}", bus=bus)

        def cleanup(dev):
            if dev.startswith("vblk"):
                print(f"    blockdev-del: {err(qmp.cmd('blockdev-del', **{'node-name': 'blk' + dev[4:]}))}")
            else:
                print(f"    netdev_del: {err(qmp.cmd('netdev_del', id='net' + dev[4:]))}")

        # 2. plug, let the guest settle, unplug
        for n, (plug, dev, bus) in enumerate([(plug_blk, "vblk1", "rp1"), (plug_net, "vnet1", "rp2")]):
            r = plug(1, bus)
            print(f"[settled] device_add {dev} on {bus}: {err(r)}", flush=True)
            time.sleep(4)
            t = time.monotonic()
            r = qmp.cmd("device_del", id=dev)
            ta = time.monotonic() - t
            r2 = qmp.cmd("device_del", id=dev)
            print(f"  device_del: {err(r)} ({ta * 1000:.0f} ms); second device_del: {err(r2)}", flush=True)
            e = qmp.wait_event("DEVICE_DELETED", dev, 60)
            print(f"  DEVICE_DELETED {dev}: " + (f"{e['_t'] - t:.2f} s after device_del" if e else "NOT in 60 s"), flush=True)
            cleanup(dev)

        # 3. device_del right after device_add
        for plug, dev, bus in [(plug_blk, "vblk2", "rp3"), (plug_net, "vnet2", "rp4")]:
            n = int(dev[4:])
            r = plug(n, bus)
            t = time.monotonic()
            print(f"[immediate] device_add {dev} on {bus}: {err(r)}", flush=True)
            r = qmp.cmd("device_del", id=dev)
            first = err(r)
            tries = 1
            while "error" in r and time.monotonic() - t < 60:
                time.sleep(0.1)
                r = qmp.cmd("device_del", id=dev)
                tries += 1
            ta = time.monotonic() - t
            print(f"  first device_del: {first}; accepted after {tries} tries, {ta:.2f} s after device_add"
                  + ("" if "return" in r else f" (NOT accepted: {err(r)})"), flush=True)
            r2 = qmp.cmd("device_del", id=dev)
            print(f"  second device_del while pending: {err(r2)}", flush=True)
            e = qmp.wait_event("DEVICE_DELETED", dev, 30)
            if not e:
                # native PCIe: the pending state expires after 5 s (virtual clock); try again
                r3 = qmp.cmd("device_del", id=dev)
                print(f"  no DEVICE_DELETED in 30 s; device_del again: {err(r3)}", flush=True)
                e = qmp.wait_event("DEVICE_DELETED", dev, 30)
            print(f"  DEVICE_DELETED {dev}: " + (f"{e['_t'] - t:.2f} s after device_add, "
                  f"{e['_t'] - t - ta:.2f} s after the accepted device_del" if e else "NOT seen"), flush=True)
            cleanup(dev)

        errs = [e for e in qmp.events if e["event"] == "DEVICE_UNPLUG_GUEST_ERROR"]
        print(f"DEVICE_UNPLUG_GUEST_ERROR events: {len(errs)}")
        print(f"guest alive at end: {q.poll() is None}; serial log:")
        print(open(log, errors="replace").read().rstrip())
    finally:
        q.kill()
        q.wait()


if __name__ == "__main__":
    main()
