"""A mock state file shared with the `vdev` command: Python attaches, the command lists, and back."""

from __future__ import annotations

import json

import vdev
import vdev.mock
from conftest import DISK


def test_python_and_the_cli_share_a_state_file(cli, tmp_path):
    uri = f"mock://{tmp_path}/host.json"
    with vdev.mock.connect(uri) as conn:
        ref = conn.attach("demo", "disk", DISK)

        p = cli("-c", uri, "--json", "devices", "demo", "disk")
        assert p.returncode == 0, p.stderr
        listed = json.loads(p.stdout)
        assert ref in json.dumps(listed) and "file:/img/b.raw" in p.stdout

        p = cli("-c", uri, "attach", "demo", "disk", "uname=file:/img/c.raw", "dev=xvdc", "mode=r")
        assert p.returncode == 0, p.stderr
        cli_ref = p.stdout.strip()
        (d,) = [d for d in conn.devices("demo", "disk") if d.ref == cli_ref]
        assert d.attrs["uname"] == "file:/img/c.raw"

        conn.detach("demo", "disk", cli_ref)
        p = cli("-c", uri, "devices", "demo", "disk")
        assert p.returncode == 0, p.stderr
        assert cli_ref not in p.stdout and ref in p.stdout

        p = cli("-c", uri, "detach", "demo", "disk", ref)
        assert p.returncode == 0, p.stderr
        assert ref not in [d.ref for d in conn.devices("demo", "disk")]

    # A plain vdev.connect on the same file sees the same host.
    with vdev.connect(uri) as conn:
        assert [d.ref for d in conn.devices("demo", "disk")] == ["51712"]
