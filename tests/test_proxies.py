"""The real daemon behind a real HAProxy and a real nginx (Debian's packages; skipped when they
are not installed: ``.ci/run`` installs them).

Clients connect from 127.0.0.2, the proxy from 127.0.0.1, the only trusted proxy. What a client
writes in its own forwarding headers must never decide the address it is registered under or
whether it may read ``/stats``.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bencodepy
import pytest

from .daemon import run_daemon

CLIENT = "127.0.0.2"
IH = "%22" * 20
TRUSTED = '[http]\ntrusted_proxies = ["127.0.0.1/32"]\n'
# /stats for 127.0.0.5 only: an address a client could claim, but none it has.
STATS = '[stats]\nallow = ["127.0.0.5/32"]\n'


def find(name: str, package: str) -> str:
    """The proxy's executable (in /usr/sbin even when that is not on PATH), or skip the test."""
    exe = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    return exe or pytest.skip(f"{name} is not installed (apt-get install {package})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"{what} exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} is not listening on {port}")


@contextmanager
def proxy(argv: list[str], port: int, what: str) -> Iterator[int]:
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_listening(port, proc, what)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def haproxy(tmp_path: Path, backend: int) -> Iterator[int]:
    """HAProxy with ``option forwardfor``: it appends its own X-Forwarded-For line."""
    exe = find("haproxy", "haproxy")
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\n"
        "  option forwardfor\n"
        f"frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n"
        f"backend b\n  server tracker 127.0.0.1:{backend}\n"
    )
    with proxy([exe, "-db", "-f", str(cfg)], port, "haproxy") as p:
        yield p


@contextmanager
def nginx(tmp_path: Path, backend: int) -> Iterator[int]:
    """nginx that sets X-Real-IP and, as it does by default, passes X-Forwarded-For through."""
    exe = find("nginx", "nginx-light")
    port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid nginx.pid;\n"
        "error_log error.log;\nevents { worker_connections 64; }\nhttp {\n  access_log off;\n"
        "  client_body_temp_path body;\n  proxy_temp_path proxy;\n  fastcgi_temp_path fastcgi;\n"
        "  uwsgi_temp_path uwsgi;\n  scgi_temp_path scgi;\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n"
        f"      proxy_pass http://127.0.0.1:{backend};\n"
        "      proxy_set_header X-Real-IP $remote_addr;\n    }\n  }\n}\n"
    )
    argv = [exe, "-p", str(prefix), "-c", "nginx.conf", "-e", "error.log"]
    with proxy(argv, port, "nginx") as p:
        yield p


def get(port: int, path: str, headers: dict[str, str], source: str = CLIENT) -> tuple[int, bytes]:
    """A request from ``source`` (CLIENT: as a client on another machine would make it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def external_ip(port: int, headers: dict[str, str], n: int) -> bytes:
    status, body = get(
        port, f"/announce?info_hash={IH}&peer_id=-JL0001-{n:012d}&port=6881", headers
    )
    assert status == 200
    return bencodepy.decode(body)[b"external ip"]


def test_behind_haproxy_a_client_cannot_choose_its_address_or_open_stats(tmp_path):
    with run_daemon(TRUSTED + STATS) as d, haproxy(tmp_path, d.port) as port:
        assert external_ip(port, {}, 1) == socket.inet_aton(CLIENT)
        assert external_ip(port, {"X-Forwarded-For": "203.0.113.66"}, 2) == socket.inet_aton(CLIENT)
        assert get(port, "/stats", {"X-Forwarded-For": "127.0.0.5"})[0] == 403
        # A client really at 127.0.0.5, forwarded by the proxy, would pass: the 403 is the check.
        genuine = {"X-Forwarded-For": "127.0.0.5"}
        assert get(d.port, "/stats", genuine, source="127.0.0.1")[0] == 200


def test_behind_nginx_with_x_real_ip_only_that_header_is_believed(tmp_path):
    config = TRUSTED + 'real_ip_header = "X-Real-IP"\n' + STATS
    with run_daemon(config) as d, nginx(tmp_path, d.port) as port:
        forged = {"X-Forwarded-For": "127.0.0.5", "X-Real-IP": "127.0.0.5"}
        assert external_ip(port, {}, 1) == socket.inet_aton(CLIENT)
        assert external_ip(port, forged, 2) == socket.inet_aton(CLIENT)
        assert get(port, "/stats", forged)[0] == 403
        genuine = {"X-Real-IP": "127.0.0.5", "X-Forwarded-For": "203.0.113.66"}
        assert get(d.port, "/stats", genuine, source="127.0.0.1")[0] == 200
