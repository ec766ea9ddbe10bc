"""Shared helpers of the vdev Python tests."""

from __future__ import annotations

import os
import pathlib
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

ROOT = pathlib.Path(__file__).resolve().parents[3]
# Every blocking wait in the tests is bounded by this many seconds.
WAIT = 20.0


def under_ci() -> bool:
    """Whether CI is set (to anything but empty, false or 0): then missing components fail."""
    return os.environ.get("CI", "") not in ("", "false", "0")


def skip_or_fail(reason: str) -> None:
    """Skip outside CI (the reason shows in pytest's summary with -rs), fail under CI."""
    if under_ci():
        pytest.fail(f"{reason}, and CI is set: run scripts/install-test-deps.sh")
    pytest.skip(reason)


def within_wait(what: str, work: Callable[[], T]) -> T:
    """Run `work`, which blocks with no bound of its own (iterating events), on a daemon thread
    and wait at most WAIT seconds for it: its result, or a failure saying what was waited for.
    On failure the thread is left blocked (a daemon thread does not keep the process alive), so
    `work` must not hold what the test closes afterwards."""
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as e:  # noqa: BLE001 - raised again below
            failed.append(e)

    t = threading.Thread(target=run, name=what, daemon=True)
    t.start()
    t.join(WAIT)
    if t.is_alive():
        pytest.fail(f"waited {WAIT} s for {what}")
    if failed:
        raise failed[0]
    return done[0]


def cli_path() -> pathlib.Path:
    """The `vdev` command (VDEV_CLI, else target/debug/vdev after `cargo build -p vdev-cli`)."""
    p = os.environ.get("VDEV_CLI")
    if p:
        return pathlib.Path(p)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "vdev"


@pytest.fixture
def cli():
    """Run the `vdev` command: cli(args...) -> CompletedProcess (text, bounded in time)."""
    path = cli_path()
    if not path.exists():
        skip_or_fail(f"the vdev command is not built ({path}): run `cargo build -p vdev-cli`")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(path), *args], capture_output=True, text=True, timeout=WAIT, check=False
        )

    return run


DISK = {"uname": "file:/img/b.raw", "dev": "xvdb", "mode": "w"}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Append each skip, with its reason, to VDEV_SKIP_LOG when it is set, as the Rust tests do,
    so that the test command's summary lists it (pytest's own -rs list scrolls by before it)."""
    log = os.environ.get("VDEV_SKIP_LOG")
    if not log or not report.skipped:
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"python {report.nodeid}: {reason}\n")
