"""Logs of the real daemon: the start-up summary, JSON lines, the access log and its masking."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request

from johnlocke import compiled

from .daemon import run_daemon

IH = "%11" * 20
PID = "-qB4520-abcdefghijkl"
PASSKEY = "0123456789abcdef0123456789abcdef"
TOKEN = "stats-token-0123456789"


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def announce(url: str) -> None:
    get(f"{url}/announce?info_hash={IH}&peer_id={PID}&port=6881&passkey={PASSKEY}")


def test_json_logs_summary_and_masked_access_lines():
    config = f'[stats]\ntoken = "{TOKEN}"\n[log]\nformat = "json"\naccess_log = true\n'
    with run_daemon(config) as d:
        announce(d.url)
        get(f"{d.url}/stats?token={TOKEN}")
        get(f"{d.url}/scrape?info_hash={IH}")
        d.wait_for_log(r'"path": "/scrape')
    lines = d.log_lines()
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    start = next(doc for doc in docs if "listening on" in doc["message"])
    assert start["level"] == "info" and start["logger"] == "johnlocke"
    assert start["listen"] == [f"127.0.0.1:{d.port}"]
    assert start["mode"] == "open" and start["strategy"] == "random"
    assert start["access_log"] is True
    assert start["build"] == compiled.BUILD and compiled.describe() in start["message"]
    access = [doc for doc in docs if doc["logger"] == "johnlocke.access"]
    assert [doc["path"].split("?")[0] for doc in access] == ["/announce", "/stats", "/scrape"]
    first = access[0]
    assert first["status"] == 200 and first["method"] == "GET"
    assert first["remote"] == "127.0.0.1" and first["duration_ms"] >= 0
    assert "passkey=0123***" in first["path"] and "passkey=0123***" in first["message"]
    # Neither the passkey nor the token appears anywhere in full.
    text = "\n".join(lines)
    assert PASSKEY not in text and TOKEN not in text
    assert any(doc["message"] == "stopped" for doc in docs)


def test_access_log_is_off_by_default_and_sighup_turns_it_on():
    with run_daemon("") as d:
        d.wait_for_log(r"listening on .*strategy random, mode open.*access log off")
        announce(d.url)
        assert "johnlocke.access" not in d.log_text()
        text = d.config_path.read_text() + "[log]\naccess_log = true\n"
        d.config_path.write_text(text)
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded", timeout=10)
        announce(d.url)  # urllib opens a new connection per request
        line = d.wait_for_log(r"johnlocke\.access: 127\.0\.0\.1 \"GET /announce\?.*").group()
        assert "passkey=0123***" in line and PASSKEY not in line
        assert '" 200 ' in line


def test_malformed_requests_are_debug_level_even_with_the_access_log_on():
    with run_daemon("[log]\naccess_log = true\n") as d:
        before = len(d.log_lines())
        for line in (
            b"GET /announce?x=\xff HTTP/1.1",
            b"GET /announce?x=\x01 HTTP/1.1",
            b"BREW /pot HTTP/1.1\x00",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
            b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 5000,
        ) * 20:
            with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
                s.sendall(line + b"\r\nHost: x\r\n\r\n")
                assert s.recv(100)[9:10] == b"4", line
        announce(d.url)  # a good request still gets its access line
        d.wait_for_log(r'johnlocke\.access: 127\.0\.0\.1 "GET /announce')
        new = d.log_lines()[before:]
    assert len(new) == 1, "\n".join(new[:20])
    assert not any("ERROR" in line or "Traceback" in line for line in new)
