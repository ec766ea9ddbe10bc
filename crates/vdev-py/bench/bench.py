#!/usr/bin/env python3
"""Attach+detach cycles per second on the mock, in one run: vdev from Python (blocking and
asyncio), vdev in Rust in process (examples/cycles.rs), and libvirt-python on its test driver.

Run with the virtual environment that has vdev installed (scripts/test.sh makes target/py-venv):

    target/py-venv/bin/python crates/vdev-py/bench/bench.py [--seconds 2]

libvirt-python is installed for Debian's /usr/bin/python3 (package python3-libvirt); it is run
there as a child process. Its test driver cannot hot-plug, so it is measured the way it can:
attachDeviceFlags/detachDeviceFlags with VIR_DOMAIN_AFFECT_CONFIG on a defined, inactive domain
(and, if that fails, defineXML/undefine of a whole domain).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[3]
DISK = {"uname": "file:/img/b.raw", "dev": "xvdb", "mode": "w"}

LIBVIRT = r"""
import sys, time, libvirt
seconds = float(sys.argv[1])
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open("test:///default")
dom = conn.defineXML("<domain type='test'><name>bench</name><memory>131072</memory>"
                     "<os><type>hvm</type></os></domain>")
disk = ("<disk type='file' device='disk'><source file='/img/b.raw'/>"
        "<target dev='vdb' bus='virtio'/></disk>")
flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
def cycles(one):
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(100):
            one()
        n += 100
    return n / (time.perf_counter() - t)
try:
    r = cycles(lambda: (dom.attachDeviceFlags(disk, flags), dom.detachDeviceFlags(disk, flags)))
    print(f"{r:.0f} attachDeviceFlags+detachDeviceFlags (AFFECT_CONFIG, inactive domain)")
except libvirt.libvirtError as e:
    dom.undefine()
    xml = ("<domain type='test'><name>b2</name><memory>131072</memory><os><type>hvm</type></os>"
           "<devices>" + disk + "</devices></domain>")
    r = cycles(lambda: conn.defineXML(xml).undefine())
    print(f"{r:.0f} defineXML+undefine (attachDeviceFlags: {e})")
"""


def rate(seconds: float, batch, n0: int = 1000) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch(n0)
        n += n0
    return n / (time.perf_counter() - start)


def blocking(seconds: float) -> float:
    import vdev

    with vdev.connect("mock:///default") as conn:
        demo = conn.domain("demo")

        def batch(k: int) -> None:
            for _ in range(k):
                conn.detach(demo, "disk", conn.attach(demo, "disk", DISK))

        return rate(seconds, batch)


def aio(seconds: float) -> float:
    import vdev.aio

    async def main() -> float:
        async with vdev.aio.connect("mock:///default") as conn:
            demo = await conn.domain("demo")
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                for _ in range(1000):
                    await conn.detach(demo, "disk", await conn.attach(demo, "disk", DISK))
                n += 1000
            return n / (time.perf_counter() - start)

    return asyncio.run(main())


def rust(seconds: float) -> str:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    subprocess.run(
        ["cargo", "build", "-q", "--release", "-p", "vdev-py", "--example", "cycles"],
        cwd=ROOT, check=True, timeout=1800,
    )  # fmt: skip
    exe = target / "release" / "examples" / "cycles"
    return subprocess.run(
        [str(exe), str(seconds)], capture_output=True, text=True, check=True, timeout=600
    ).stdout.strip()


def libvirt(seconds: float) -> str:
    p = subprocess.run(
        ["/usr/bin/python3", "-c", LIBVIRT, str(seconds)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if p.returncode != 0:
        return "not measured: " + (p.stderr.strip().splitlines() or ["?"])[-1]
    return p.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    a = ap.parse_args()
    print(f"attach+detach cycles/s on the mock ({a.seconds:g} s each, Python {sys.version.split()[0]})")
    print(f"  vdev, Python, blocking:   {blocking(a.seconds):,.0f}")
    print(f"  vdev, Python, asyncio:    {aio(a.seconds):,.0f}")
    print(f"  vdev, Rust, in process:   {int(rust(a.seconds)):,}")
    print(f"  libvirt-python (test:///default): {libvirt(a.seconds)}")


if __name__ == "__main__":
    main()
