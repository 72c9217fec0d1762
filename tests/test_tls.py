"""HTTPS: the real daemon serving announces over TLS with a certificate the test makes (trustme),
start-up refusing bad certificate files, and SIGHUP swapping the certificate in place."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
import urllib.request
from pathlib import Path

import bencodepy
import pytest
import trustme
from cryptography.hazmat.primitives import serialization  # trustme's own dependency

from .daemon import Daemon, run_daemon
from .test_access_daemon import hup
from .test_config import run_cli

TLS = """
[http]
host = "127.0.0.1"
port = 0
tls_cert = "cert.pem"
tls_key = "key.pem"
"""


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def issue(ca: trustme.CA, folder: Path, cert: str = "cert.pem", key: str = "key.pem") -> bytes:
    """A certificate for 127.0.0.1 and its key, written to ``folder``; its DER bytes."""
    leaf = ca.issue_cert("127.0.0.1", "::1", "localhost")
    folder.mkdir(parents=True, exist_ok=True)
    leaf.cert_chain_pems[0].write_to_path(str(folder / cert))
    leaf.private_key_pem.write_to_path(str(folder / key))
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def announce_path(n: int, info_hash: bytes = b"\x22" * 20) -> str:
    query = {"info_hash": info_hash, "peer_id": f"-JL0001-{n:012d}".encode(), "port": 7000 + n}
    return "/announce?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)


def get(conn: http.client.HTTPConnection, path: str) -> dict:
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200
    return bencodepy.decode(resp.read())


def connect(d: Daemon, ctx: ssl.SSLContext) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection("127.0.0.1", d.port, context=ctx, timeout=5)
    conn.connect()
    return conn


def served_cert(conn: http.client.HTTPSConnection) -> bytes:
    assert isinstance(conn.sock, ssl.SSLSocket)
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_announce_and_scrape_over_https(tmp_path, ca, loop):
    issue(ca, tmp_path)
    config = TLS + f'event_loop = "{loop}"\n'
    with run_daemon(config, workdir=tmp_path, scheme="https") as d:
        d.wait_for_log(rf"listening on https://127\.0\.0\.1:{d.port} ")
        ctx = client_context(ca)
        with urllib.request.urlopen(d.url + announce_path(1), context=ctx, timeout=5) as r:
            reply = bencodepy.decode(r.read())
        assert reply[b"complete"] == 1 and b"failure reason" not in reply
        scrape = d.url + "/scrape?info_hash=" + urllib.parse.quote(b"\x22" * 20)
        with urllib.request.urlopen(scrape, context=ctx, timeout=5) as r:
            assert bencodepy.decode(r.read())[b"files"][b"\x22" * 20][b"complete"] == 1
        conn = connect(d, ctx)  # keep-alive: several requests on one TLS connection
        assert [get(conn, announce_path(n))[b"complete"] for n in (2, 3)] == [2, 3]
        conn.close()
        # Plain HTTP on the TLS port gets no answer.
        plain = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
        with pytest.raises((OSError, http.client.HTTPException)):
            get(plain, announce_path(9))
        plain.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_2_and_newer_only(tmp_path, ca):
    issue(ca, tmp_path)
    with run_daemon(TLS, workdir=tmp_path, scheme="https") as d:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_context(ca)
            ctx.minimum_version = ctx.maximum_version = version
            conn = connect(d, ctx)
            assert conn.sock.version() == version.name.replace("_", ".")  # type: ignore[union-attr]
            assert b"failure reason" not in get(conn, announce_path(1))
            conn.close()
        old = client_context(ca)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client would speak TLS 1.0 and 1.1
        old.minimum_version, old.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):
            connect(d, old)


def test_sighup_swaps_the_certificate_keeping_connections_and_swarms(tmp_path, ca):
    first = issue(ca, tmp_path)
    with run_daemon(TLS, workdir=tmp_path, scheme="https") as d:
        ctx = client_context(ca)
        old_conn = connect(d, ctx)
        assert served_cert(old_conn) == first
        for n in range(3):
            get(old_conn, announce_path(n))

        renewed = issue(ca, tmp_path)
        assert renewed != first
        hup(d)
        d.wait_for_log("TLS certificate reloaded from " + str(tmp_path / "cert.pem"))
        # The connection opened before goes on, and sees the same swarm.
        reply = get(old_conn, announce_path(3))
        assert reply[b"complete"] == 4
        # New connections get the new certificate, and the same swarm.
        new_conn = connect(d, ctx)
        assert served_cert(new_conn) == renewed
        assert get(new_conn, announce_path(4))[b"complete"] == 5

        # A broken certificate file is refused; the running certificate stays.
        (tmp_path / "cert.pem").write_text("not a certificate\n")
        hup(d)
        d.wait_for_log(
            r"reload of tls failed, it keeps its previous settings: \[http\] tls_cert: "
            + str(tmp_path / "cert.pem")
            + ": no PEM certificate in it"
        )
        # So is a certificate with another certificate's key.
        issue(ca, tmp_path)
        issue(ca, tmp_path / "other")
        (tmp_path / "key.pem").write_bytes((tmp_path / "other" / "key.pem").read_bytes())
        hup(d)
        d.wait_for_log(
            r"\[http\] tls_key: " + str(tmp_path / "key.pem") + ": the key does not belong"
        )
        check = connect(d, ctx)
        assert served_cert(check) == renewed
        assert get(check, announce_path(5))[b"complete"] == 6
        assert get(old_conn, announce_path(6))[b"complete"] == 7
        for conn in (old_conn, new_conn, check):
            conn.close()


def test_a_silent_connection_is_closed_within_request_timeout(tmp_path, ca):
    """A client that never starts its TLS handshake is dropped after [http] request_timeout,
    as it would be over plain HTTP (asyncio alone would wait 60 s)."""
    issue(ca, tmp_path)
    with run_daemon(TLS + "request_timeout = 1\n", workdir=tmp_path, scheme="https") as d:
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as silent:
            t0 = time.monotonic()
            assert silent.recv(100) == b""  # closed by the tracker
            assert time.monotonic() - t0 < 5
        conn = connect(d, client_context(ca))  # a real client still gets in
        assert b"failure reason" not in get(conn, announce_path(1))
        conn.close()


def test_the_certificate_may_hold_its_key(tmp_path, ca):
    leaf = ca.issue_cert("127.0.0.1")
    (tmp_path / "both.pem").write_bytes(
        leaf.private_key_pem.bytes() + leaf.cert_chain_pems[0].bytes()
    )
    text = TLS.replace('"cert.pem"', '"both.pem"').replace('tls_key = "key.pem"\n', "")
    with run_daemon(text, workdir=tmp_path, scheme="https") as d:
        conn = connect(d, client_context(ca))
        assert get(conn, announce_path(1))[b"complete"] == 1
        conn.close()


def _encrypted_key(ca: trustme.CA, folder: Path) -> None:
    issue(ca, folder)
    key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), None)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda ca, d: None, "[http] tls_cert: {d}/cert.pem: cannot read: No such file"),
        (
            lambda ca, d: (issue(ca, d), (d / "key.pem").unlink()),
            "[http] tls_key: {d}/key.pem: cannot read: No such file",
        ),
        (
            lambda ca, d: (issue(ca, d), (d / "cert.pem").unlink(), (d / "cert.pem").mkdir()),
            "[http] tls_cert: {d}/cert.pem: cannot read: Is a directory",
        ),
        (
            lambda ca, d: (issue(ca, d), (d / "key.pem").write_text("garbage")),
            "[http] tls_key: {d}/key.pem: no PEM private key in it",
        ),
        (_encrypted_key, "[http] tls_key: {d}/key.pem: the private key is encrypted"),
    ],
)
def test_a_bad_certificate_file_stops_start_up_naming_the_key(tmp_path, ca, make, expected):
    make(ca, tmp_path)
    (tmp_path / "tracker.toml").write_text(TLS)
    for args in (["--check-config"], []):
        result = run_cli("--config", "tracker.toml", *args, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("johnlocke: tracker.toml: " + expected.format(d=tmp_path)), last


def test_tls_key_without_tls_cert_is_a_config_error(tmp_path):
    (tmp_path / "tracker.toml").write_text('[http]\ntls_key = "key.pem"\n')
    result = run_cli("--check-config", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "johnlocke: tracker.toml: [http]: tls_key needs tls_cert (the certificate chain it goes"
        " with)"
    )


def test_check_config_loads_the_certificate(tmp_path, ca):
    issue(ca, tmp_path)
    (tmp_path / "tracker.toml").write_text(TLS)
    result = run_cli("--check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# tracker.toml: OK (mode open, HTTPS)")
    assert f'tls_cert = "{tmp_path / "cert.pem"}"' in result.stdout


def test_turning_tls_on_needs_a_restart(tmp_path, ca):
    issue(ca, tmp_path)
    with run_daemon("", workdir=tmp_path) as d:
        port_line = f'[http]\nhost = "127.0.0.1"\nport = {d.port}\n'
        d.config_path.write_text(port_line + 'tls_cert = "cert.pem"\ntls_key = "key.pem"\n')
        hup(d)
        d.wait_for_log(r"\[http\] changes take effect only after a restart")
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            s.sendall(b"GET " + announce_path(1).encode() + b" HTTP/1.0\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.0 200")  # still plain HTTP


def _closed_soon(sock: socket.socket, within: float) -> bool:
    """Whether the tracker closes ``sock`` (which sends nothing) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(100) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_handshakes_count_against_the_connections_per_address(tmp_path, ca):
    """A connection in its TLS handshake holds one of its address's connections: more than
    [http] max_connections_per_ip from one address are closed at once, handshake or not."""
    issue(ca, tmp_path)
    config = TLS + "request_timeout = 30\nmax_connections_per_ip = 2\n"
    with run_daemon(config, workdir=tmp_path, scheme="https") as d:
        silent = [socket.create_connection(("127.0.0.1", d.port), timeout=5) for _ in range(4)]
        try:
            assert [_closed_soon(s, 1.0) for s in silent[2:]] == [True, True]
            assert [_closed_soon(s, 0.3) for s in silent[:2]] == [False, False]
        finally:
            for s in silent:
                s.close()
        conn = connect(d, client_context(ca))  # the address's share is free again
        assert b"failure reason" not in get(conn, announce_path(1))
        conn.close()


def test_unfinished_handshakes_make_room_for_a_real_client_at_the_cap(tmp_path, ca):
    """At [http] max_connections, the oldest connection that has not finished its handshake is
    closed for a newcomer, as one that never sent a request would be."""
    issue(ca, tmp_path)
    config = TLS + "request_timeout = 30\nmax_connections = 3\nmax_connections_per_ip = 0\n"
    with run_daemon(config, workdir=tmp_path, scheme="https") as d:
        silent = []
        for _ in range(3):
            silent.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
            time.sleep(0.1)  # accepted in this order
        try:
            time.sleep(1.2)  # past the grace a new connection gets
            conn = connect(d, client_context(ca))
            assert b"failure reason" not in get(conn, announce_path(1))
            conn.close()
            assert _closed_soon(silent[0], 2.0)
            assert not _closed_soon(silent[2], 0.3)
        finally:
            for s in silent:
                s.close()
