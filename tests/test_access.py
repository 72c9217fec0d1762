"""johnlocke.access on its own: .torrent parsing (checked against libtorrent), list and passkey
files, passkey masking in logs."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import bencodepy
import pytest

from johnlocke.access import (
    TorrentError,
    mask,
    parse_hash_list,
    parse_info_hash,
    parse_passkeys,
    torrent_hashes,
)
from johnlocke.logs import RedactSecrets, mask_request, redact
from johnlocke.logs import mask as mask_target

from .access_files import Torrent

KEY = "0123456789abcdef0123456789abcdef"


# --- .torrent files ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["v1", "v2", "hybrid"])
def test_torrent_hashes_of_each_kind(kind):
    t = Torrent("x", kind)
    assert torrent_hashes(t.data) == (t.v1, t.v2)


def test_torrent_hashes_match_libtorrent(tmp_path):
    lt = pytest.importorskip("libtorrent")
    from tests.torrent_clients import FILE_NAME, make_torrent

    (tmp_path / FILE_NAME).write_bytes(os.urandom(200_000))
    for flags in (0, lt.create_torrent.v1_only, lt.create_torrent.v2_only):
        data = make_torrent(tmp_path, "http://127.0.0.1:1/announce", flags, 16384)
        ih = lt.torrent_info(lt.bdecode(data)).info_hashes()
        v1 = ih.v1.to_bytes() if ih.has_v1() else None
        v2 = ih.v2.to_bytes()[:20] if ih.has_v2() else None
        assert torrent_hashes(data) == (v1, v2), flags


def test_info_hash_is_over_the_bytes_as_written_not_a_re_encoding():
    # Keys out of order: a re-encoding would sort them and hash something else.
    info = b"d6:lengthi5e4:name1:x6:pieces20:" + b"p" * 20 + b"12:piece lengthi16384ee"
    data = b"d4:info" + info + b"e"
    import hashlib

    assert torrent_hashes(data) == (hashlib.sha1(info).digest(), None)


@pytest.mark.parametrize(
    "data,why",
    [
        (b"", "not a bencoded dictionary"),
        (b"hello", "not a bencoded dictionary"),
        (b"d4:info", "not valid bencode"),
        (b"d4:infoi3ee", "no info dictionary"),
        (b"d8:announce3:urle", "no info dictionary"),
        (b"d4:infod4:name1:xee", "piece length"),
        (b"d4:infod12:piece lengthi16384eee", "neither v1 pieces nor a v2 file tree"),
        (b"d4:infod12:piece lengthi16384e6:pieces3:abcee", "pieces"),
        (b"d4:infod12:meta versioni3e12:piece lengthi1eee", "unsupported meta version 3"),
        (b"d4:infod12:meta versioni2e12:piece lengthi1eee", "no file tree"),
    ],
)
def test_broken_torrents_say_why(data, why):
    with pytest.raises(TorrentError, match=why):
        torrent_hashes(data)


def test_trailing_garbage_is_refused():
    with pytest.raises(TorrentError, match="data after the end"):
        torrent_hashes(Torrent("x").data + b"junk")


# --- lists ---------------------------------------------------------------------------------------


def test_info_hash_forms():
    h = bytes(range(20))
    assert parse_info_hash(h.hex()) == h
    assert parse_info_hash(h.hex().upper()) == h
    assert parse_info_hash(base64.b32encode(h).decode().lower()) == h
    assert parse_info_hash(bytes(range(32)).hex()) == bytes(range(20))  # v2, truncated
    for bad in ("xyz", "0" * 39, "g" * 40, "!" * 32):
        with pytest.raises(ValueError, match="not an info_hash"):
            parse_info_hash(bad)


def test_hash_list_skips_comments_blank_and_bad_lines(caplog, tmp_path):
    a, b = b"\xaa" * 20, b"\xbb" * 20
    text = f"# banned\n\n{a.hex()}  # a comment\n  {b.hex()} trailing words\nnot-a-hash\n"
    with caplog.at_level(logging.WARNING):
        assert parse_hash_list(text, tmp_path / "deny.txt") == {a, b}
    assert "deny.txt line 5: not an info_hash" in caplog.text


def test_a_file_of_garbage_logs_a_few_lines_then_a_count(caplog, tmp_path):
    with caplog.at_level(logging.WARNING):
        assert parse_hash_list("nope\n" * 500, tmp_path / "x.txt") == frozenset()
    assert caplog.text.count("line skipped") == 10
    assert "490 more bad lines skipped" in caplog.text


def test_passkeys_with_labels_and_bad_lines(caplog, tmp_path):
    other = "f" * 32
    text = f"{KEY} alice (laptop)\n{other}\tbob\n{KEY} again\nhas/slash\n# note\nshort\n"
    with caplog.at_level(logging.WARNING):
        keys = parse_passkeys(text, tmp_path / "passkeys.txt")
    assert keys == {KEY.encode(): "alice (laptop)", other.encode(): "bob", b"short": ""}
    assert "line 3: passkey 0123*** repeats an earlier line" in caplog.text
    assert "line 4: passkey" in caplog.text and "letters, digits" in caplog.text
    assert "1 passkeys are shorter than 16 characters" in caplog.text
    assert KEY not in caplog.text


# --- masking -----------------------------------------------------------------------------------


def test_mask_shows_4_characters_of_long_keys_only():
    assert mask(KEY) == "0123***"
    assert mask(b"abcdefgh") == "***"
    assert mask("abc") == "***"


def test_redact_masks_every_passkey_form():
    for text in (
        f"/announce/{KEY}?info_hash=x",
        f"/{KEY}/announce?info_hash=x",
        f"/scrape/{KEY}",
        f"/{KEY}/scrape?x=1",
        f"/announce?info_hash=x&passkey={KEY}&port=1",
        f'GET "/announce?passkey={KEY}" failed',
    ):
        clean = redact(text)
        assert KEY not in clean and "0123***" in clean, clean
        if text.startswith("/"):  # a request target, as the access log masks it
            assert KEY not in mask_target(text) and "0123***" in mask_target(text), text
    assert redact("/announce?info_hash=x") == "/announce?info_hash=x"
    assert mask_target("/announce?info_hash=x") == "/announce?info_hash=x"
    assert mask_target("/scrape") == "/scrape"


@pytest.mark.parametrize(
    "target,logged",
    [
        (f"http://127.0.0.1:6969/{KEY}/announce?a=1", "/0123***/announce?a=1"),
        (f"//{KEY}/announce?a=1", "/0123***/announce?a=1"),
        (f"/../{KEY}/announce", "/0123***/announce"),
        (f"/{KEY}/../announce?a=1", "/announce?a=1"),  # the parser drops it: so does the log
        (f"/announce/../{KEY}/announce", "/0123***/announce"),
        (f"/announce?pass%6Bey={KEY}&a=1", "/announce?pass%6Bey=0123***&a=1"),
        (f"/announce?PASSKEY={KEY};token={KEY}", "/announce?PASSKEY=0123***;token=0123***"),
        (f"/announce?passkey=%30{KEY[1:]}", "/announce?passkey=0123***"),
        (f"/scrape/{KEY[:8]}", "/scrape/***"),
        ("/announce?info_hash=%ff%00&passkey=", "/announce?info_hash=%ff%00&passkey="),
        ("/favicon.ico", "/favicon.ico"),
        ("/x?y=\udcff", "/x?y=\\xff"),  # bytes that are not UTF-8, as aiohttp hands them over
    ],
)
def test_mask_hides_the_passkey_wherever_the_parser_finds_it(target, logged):
    assert mask_target(target) == logged
    # A UDP frontend passes BEP 41 URL data as bytes.
    raw = target.encode("utf-8", "surrogateescape")
    assert mask_target(raw) == logged


def test_header_values_are_masked_with_the_request():
    target, (agent, referer) = mask_request(
        f"/announce/{KEY}", [f"qB/4.6 ({KEY})", "http://t.example/announce?passkey=abcdefgh"]
    )
    assert target == "/announce/0123***"
    assert agent == "qB/4.6 (0123***)"  # the key the target carried, wherever it appears
    # A tracker URL's own key; in free text a host before /announce cannot be told from a key.
    assert referer == "http://***/announce?passkey=***"
    assert mask_request("/announce", ["Transmission/4.0"])[1] == ["Transmission/4.0"]


def test_log_filter_masks_messages_and_tracebacks():
    logger = logging.getLogger("test.redact")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactSecrets())
    logger.addHandler(handler)
    try:
        logger.error("bad request %s", f"/announce/{KEY}")
        try:
            raise ValueError(f"while handling /x?passkey={KEY}")
        except ValueError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2
    assert all(KEY not in r for r in records)
    assert "0123***" in records[0] and "ValueError" in records[1] and "0123***" in records[1]


def test_bencode_dependency_still_decodes_torrents():
    # The parser relies on bencode.py's decoder internals (decode_func, decode_string).
    assert bencodepy.decode(Torrent("x").data)[b"info"][b"name"] == b"x"


def test_paths_are_relative_to_the_config_folder(tmp_path: Path):
    from johnlocke.access import load_check
    from johnlocke.config import validate

    Torrent("a").write(tmp_path / "t")
    (tmp_path / "keys.txt").write_text(KEY + "\n")
    config = validate(
        {"access": {"mode": "private", "torrents_dir": "t", "passkeys": "keys.txt"}}, "x"
    )
    assert load_check(config, tmp_path) == (
        "mode private, 1 torrents (0 hybrid), 1 allowed info_hashes, 1 passkeys"
    )


@pytest.mark.parametrize(
    "access,expected",
    [
        ({"mode": "secret"}, "[access] mode"),
        ({"mode": "listed"}, 'mode "listed" tracks only listed torrents: set torrents_dir'),
        ({"mode": "private", "torrents_dir": "t"}, 'mode "private" needs a passkeys file'),
        ({"client_deny": ["-X L"]}, "is not a peer_id prefix"),
        ({"client_allow": [""]}, "is not a peer_id prefix"),
        ({"rescan_interval": -1}, "[access] rescan_interval"),
    ],
)
def test_bad_access_config_is_one_clear_line(access, expected):
    from johnlocke.config import ConfigError, validate

    with pytest.raises(ConfigError) as err:
        validate({"access": access}, "tracker.toml")
    assert str(err.value).startswith("tracker.toml: [access]")
    assert expected in str(err.value)


def test_bad_limits_config():
    from johnlocke.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"\[limits\] max_peers_per_ip"):
        validate({"limits": {"max_peers_per_ip": 1000}}, "tracker.toml")
