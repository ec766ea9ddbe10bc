#!/usr/bin/env python3
"""Host end of the Xen-lab command channel (Python standard library only).

    xlsh.py run [-t TIMEOUT] -          run the script read from stdin in dom0
    xlsh.py run [-t TIMEOUT] CMD...     run CMD... (joined by spaces, like ssh) in dom0
    xlsh.py put [-t TIMEOUT] LOCAL REMOTE

The dom0 end is guest/xenlab-shd, reached on 127.0.0.1:$SH_PORT (QEMU hostfwd to dom0:2222).
`run` streams the command's stdout, then writes its stderr, and exits with its status
(124 on timeout, 255 when the channel itself fails). `put` keeps the permission bits and checks
the sha256 computed in dom0. With XENLAB_SHARE set (the host folder that dom0 mounts read-only
on /mnt/host through virtio-9p) it stages the file there and copies it inside dom0; otherwise
(or with XENLAB_PUT=tcp) it sends raw bytes over the channel. Relative REMOTE paths are
relative to /root; a REMOTE ending in / or naming a folder gets LOCAL's file name.
"""
import base64
import hashlib
import os
import secrets
import shlex
import socket
import sys
import time

CHUNK = 1 << 16


class ChannelError(Exception):
    pass


class Conn:
    def __init__(self, port, timeout):
        self.deadline = time.monotonic() + timeout
        try:
            self.s = socket.create_connection(("127.0.0.1", port), timeout=min(timeout, 30))
        except OSError as e:
            raise ChannelError(f"cannot connect to dom0 shell on 127.0.0.1:{port}: {e}") from e
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _left(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def send(self, data):
        self.s.settimeout(self._left())
        self.s.sendall(data)

    def recv(self):
        self.s.settimeout(self._left())
        try:
            return self.s.recv(CHUNK)
        except socket.timeout as e:
            raise TimeoutError from e

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def run(port, script, timeout, out=None, err=None):
    token = "XENLAB-END-" + secrets.token_hex(16)
    # dom0 kills the command after `timeout` s; the client waits a little longer for that answer.
    c = Conn(port, timeout + 20)
    out = out or sys.stdout.buffer
    err = err or sys.stderr.buffer
    try:
        c.send(f"XENLAB1 run {token} {max(1, int(timeout))} {len(script)}\n".encode() + script)
        marker = b"\n" + token.encode() + b" "
        keep = len(marker) - 1
        buf = b""
        while True:
            data = c.recv()
            if not data:
                out.write(buf)
                out.flush()
                raise ChannelError("dom0 closed the connection before the command finished")
            buf += data
            i = buf.find(marker)
            if i < 0:
                # hold back only a tail that could be the start of the marker
                hold = next((k for k in range(min(len(buf), keep), 0, -1) if marker.startswith(buf[-k:])), 0)
                if len(buf) > hold:
                    out.write(buf[:len(buf) - hold])
                    out.flush()
                    buf = buf[len(buf) - hold:]
                continue
            out.write(buf[:i])
            out.flush()
            rest = buf[i + len(marker):]
            while b"\n" not in rest:
                data = c.recv()
                if not data:
                    raise ChannelError("truncated reply from dom0")
                rest += data
            line, _, rest = rest.partition(b"\n")
            fields = dict(kv.split("=", 1) for kv in line.decode().split())
            rc, nerr = int(fields["rc"]), int(fields["err"])
            while len(rest) < nerr:
                data = c.recv()
                if not data:
                    break
                rest += data
            err.write(rest[:nerr])
            err.flush()
            return rc
    finally:
        c.close()


class Sink:
    def __init__(self):
        self.data = b""

    def write(self, b):
        self.data += b

    def flush(self):
        pass


def put_share(port, share, local, remote, timeout):
    st = os.stat(local)
    size, mode = st.st_size, st.st_mode & 0o7777
    name = ".put-" + secrets.token_hex(8)
    staged = os.path.join(share, name)
    t0 = time.monotonic()
    h = hashlib.sha256()
    try:
        with open(local, "rb") as src, open(staged, "wb") as dst:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                dst.write(chunk)
        base = shlex.quote(os.path.basename(local))
        script = f"""set -e
src=/mnt/host/{name}; dst={shlex.quote(remote)}
case "$dst" in */) dst=$dst{base} ;; esac
[ -d "$dst" ] && dst=$dst/{base}
d=${{dst%/*}}; [ -n "$d" ] && [ "$d" != "$dst" ] && [ ! -d "$d" ] && mkdir -p "$d"
tmp=$dst.xenlab-put.$$
cp "$src" "$tmp" && chmod {mode:o} "$tmp" && mv -f "$tmp" "$dst" || {{ rm -f "$tmp"; exit 1; }}
set -- $(sha256sum "$dst"); echo "sha256=$1"
"""
        out, err = Sink(), Sink()
        rc = run(port, script.encode(), timeout, out, err)
    finally:
        try:
            os.unlink(staged)
        except OSError:
            pass
    dt = time.monotonic() - t0
    if err.data:
        sys.stderr.write(err.data.decode(errors="replace"))
    if rc != 0:
        raise ChannelError(f"put {local} -> dom0:{remote} failed (rc={rc})")
    got = out.data.decode(errors="replace").strip().rpartition("sha256=")[2]
    if got != h.hexdigest():
        raise ChannelError(f"put {local} -> dom0:{remote}: sha256 mismatch (host {h.hexdigest()}, dom0 {got})")
    sys.stderr.write(f"xenlab put: {local} -> dom0:{remote} ({size} bytes, mode {mode:o}, "
                     f"{dt:.2f} s, {size / max(dt, 1e-6) / 1e6:.1f} MB/s, via the 9p share, sha256 ok)\n")
    return 0


def put(port, local, remote, timeout):
    st = os.stat(local)
    size, mode = st.st_size, st.st_mode & 0o7777
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    token = "XENLAB-END-" + secrets.token_hex(16)
    c = Conn(port, timeout)
    h = hashlib.sha256()
    t0 = time.monotonic()
    try:
        c.send(f"XENLAB1 put {token} {mode:o} {size} {b64(os.path.basename(local))} {b64(remote)}\n".encode())
        sent = 0
        with open(local, "rb") as f:
            while True:
                chunk = f.read(CHUNK * 4)
                if not chunk:
                    break
                h.update(chunk)
                c.send(chunk)
                sent += len(chunk)
        if sent != size:
            raise ChannelError(f"{local} changed while it was sent")
        buf = b""
        while (token.encode() + b" ") not in buf or not buf.endswith(b"\n"):
            data = c.recv()
            if not data:
                break
            buf += data
    finally:
        c.close()
    dt = time.monotonic() - t0
    pre, _, line = buf.partition(token.encode() + b" ")
    if pre.strip():
        sys.stderr.write(pre.decode(errors="replace"))
    fields = dict(kv.split("=", 1) for kv in line.decode(errors="replace").split() if "=" in kv)
    if fields.get("rc") != "0":
        raise ChannelError(f"put {local} -> dom0:{remote} failed (rc={fields.get('rc', '?')})")
    if fields.get("sha256") != h.hexdigest():
        raise ChannelError(f"put {local} -> dom0:{remote}: sha256 mismatch "
                           f"(host {h.hexdigest()}, dom0 {fields.get('sha256')})")
    sys.stderr.write(f"xenlab put: {local} -> dom0:{remote} ({size} bytes, mode {mode:o}, "
                     f"{dt:.2f} s, {size / max(dt, 1e-6) / 1e6:.1f} MB/s, via TCP, sha256 ok)\n")
    return 0


def main(argv):
    port = int(os.environ.get("SH_PORT", "12222"))
    timeout = float(os.environ.get("XENLAB_SH_TIMEOUT", "300"))
    if not argv or argv[0] not in ("run", "put"):
        sys.stderr.write(__doc__)
        return 2
    verb, args = argv[0], argv[1:]
    if len(args) >= 2 and args[0] == "-t":
        timeout, args = float(args[1]), args[2:]
    try:
        if verb == "run":
            if not args:
                sys.stderr.write("xenlab sh: no command (use '-' to read a script from stdin)\n")
                return 2
            script = sys.stdin.buffer.read() if args == ["-"] else " ".join(args).encode() + b"\n"
            return run(port, script, timeout)
        if len(args) != 2:
            sys.stderr.write("usage: xenlab put LOCAL REMOTE\n")
            return 2
        share = os.environ.get("XENLAB_SHARE", "")
        if share and os.environ.get("XENLAB_PUT", "") != "tcp":
            return put_share(port, share, args[0], args[1], timeout)
        return put(port, args[0], args[1], timeout)
    except TimeoutError:
        sys.stderr.write(f"xenlab: dom0 command timed out after {timeout:.0f} s\n")
        return 124
    except (ChannelError, OSError) as e:
        sys.stderr.write(f"xenlab: {e}\n")
        return 255
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
