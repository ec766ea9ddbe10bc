# -*- coding: utf-8 -*-
# Copyright (c) the vdev authors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The vdev Python tests' helpers, reused (crates/vdev-py/tests/conftest.py): skip outside CI and
fail under CI when a real part is missing, and skips logged to VDEV_SKIP_LOG for the test
command's summary."""

from __future__ import annotations

import importlib.util
import os
import pathlib

# As fleetlab.ROOT (not imported from there: fleetlab imports test_qemu, which imports this module).
ROOT = pathlib.Path(os.environ.get("VDEV_ROOT") or pathlib.Path(__file__).resolve().parents[7])
PY_TESTS = ROOT / "crates" / "vdev-py" / "tests"
_spec = importlib.util.spec_from_file_location("vdev_py_conftest", PY_TESTS / "conftest.py")
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)

WAIT = _shared.WAIT
skip_or_fail = _shared.skip_or_fail
under_ci = _shared.under_ci
pytest_runtest_logreport = _shared.pytest_runtest_logreport
