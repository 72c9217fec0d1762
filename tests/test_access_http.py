"""Modes, lists, passkeys, client rules, scrape rules and abuse limits, through real HTTP."""

from __future__ import annotations

import logging
import os

import pytest

from johnlocke.access import BAD_PASSKEY, DENIED, NO_PASSKEY, UNREGISTERED

from .access_files import Torrent, write_lines
from .conftest import LoopTurns
from .test_http import LOCAL, compact, pid

KEY = "5f1c0a9e3b7d4c2a8e6f1b0d9c7a5e3f"
KEY2 = "aa11bb22cc33dd44ee55ff6600778899"
OTHER = b"\x77" * 20


def failure(reply: dict) -> str:
    assert b"failure reason" in reply, reply
    return reply[b"failure reason"].decode()


def ok(reply: dict) -> dict:
    assert b"failure reason" not in reply, reply
    return reply


async def stats(c) -> tuple[int, int, int]:
    """(swarms, seeders, leechers) over the tracker's store."""
    st = await c.tracker.store.stats()
    return st.swarms, st.seeders, st.leechers


# --- modes -------------------------------------------------------------------------------------


async def test_open_mode_tracks_anything_and_checks_nothing(tracker_client):
    c = await tracker_client()
    assert c.tracker.access.active is False  # the announce path skips every check
    ok(await c.announce(OTHER, pid(1)))
    assert (await c.scrape(OTHER))[b"files"][OTHER][b"incomplete"] == 1


async def test_listed_mode_tracks_only_the_torrents_folder(tracker_client, tmp_path):
    listed = Torrent("holiday photos")
    listed.write(tmp_path / "torrents")
    c = await tracker_client(
        base_dir=tmp_path, access={"mode": "listed", "torrents_dir": "torrents"}
    )
    r = await c.announce(OTHER, pid(1))
    assert failure(r) == UNREGISTERED
    assert await stats(c) == (0, 0, 0)  # a refused announce changes nothing
    ok(await c.announce(listed.v1, pid(1), port=1001))
    r = ok(await c.announce(listed.v1, pid(2), port=1002))
    assert compact(r[b"peers"]) == [(LOCAL, 1001)]


async def test_listed_mode_with_an_allow_list(tracker_client, tmp_path):
    a, b = b"\xaa" * 20, b"\xbb" * 20
    write_lines(tmp_path / "allow.txt", "# our torrents", a.hex(), b.hex().upper() + "  # B")
    c = await tracker_client(
        base_dir=tmp_path, access={"mode": "listed", "allow_list": "allow.txt"}
    )
    ok(await c.announce(a, pid(1)))
    ok(await c.announce(b, pid(1)))
    assert failure(await c.announce(OTHER, pid(1))) == UNREGISTERED


async def test_private_mode_needs_a_known_passkey_in_any_form(tracker_client, tmp_path):
    t = Torrent("family")
    t.write(tmp_path / "torrents")
    write_lines(tmp_path / "passkeys.txt", f"{KEY} grandma", f"{KEY2} uncle bob")
    c = await tracker_client(
        base_dir=tmp_path,
        access={"mode": "private", "torrents_dir": "torrents", "passkeys": "passkeys.txt"},
    )
    assert failure(await c.announce(t.v1, pid(1))) == NO_PASSKEY
    assert failure(await c.announce(t.v1, pid(1), passkey="")) == NO_PASSKEY
    assert failure(await c.announce(t.v1, pid(1), passkey="nope")) == BAD_PASSKEY
    assert failure(await c.announce(t.v1, pid(1), path="/announce/nope")) == BAD_PASSKEY
    assert await stats(c) == (0, 0, 0)
    ok(await c.announce(t.v1, pid(1), port=1001, passkey=KEY))
    ok(await c.announce(t.v1, pid(2), port=1002, path=f"/announce/{KEY2}"))
    ok(await c.announce(t.v1, pid(3), port=1003, path=f"/{KEY}/announce"))
    # The path wins over the query.
    ok(await c.announce(t.v1, pid(4), port=1004, path=f"/announce/{KEY}", passkey="nope"))
    # A valid passkey does not open the tracker to other torrents.
    assert failure(await c.announce(OTHER, pid(1), passkey=KEY)) == UNREGISTERED
    assert await stats(c) == (1, 0, 4)
    # Unknown paths are still 404.
    assert (await c.http.get(f"/announce/{KEY}/x")).status == 404


async def test_deny_list_wins_in_every_mode(tracker_client, tmp_path):
    t = Torrent("ok")
    bad = Torrent("banned")
    t.write(tmp_path / "torrents")
    bad.write(tmp_path / "torrents")
    write_lines(tmp_path / "deny.txt", bad.v1.hex(), OTHER.hex())
    c = await tracker_client(base_dir=tmp_path, access={"deny_list": "deny.txt"})
    assert c.tracker.access.active is True
    assert failure(await c.announce(OTHER, pid(1))) == DENIED
    ok(await c.announce(b"\x01" * 20, pid(1)))
    c = await tracker_client(
        base_dir=tmp_path,
        access={"mode": "listed", "torrents_dir": "torrents", "deny_list": "deny.txt"},
    )
    assert failure(await c.announce(bad.v1, pid(1))) == DENIED
    ok(await c.announce(t.v1, pid(1)))


# --- client rules ------------------------------------------------------------------------------


async def test_client_deny_and_allow_by_peer_id_prefix(tracker_client):
    c = await tracker_client(access={"client_deny": ["-XL", "-SD"]})
    r = await c.announce(OTHER, b"-XL0012-" + b"x" * 12)
    assert failure(r) == "your BitTorrent client (-XL0012-) is banned on this tracker"
    ok(await c.announce(OTHER, b"-qB4650-" + b"x" * 12))
    c = await tracker_client(
        access={"client_allow": ["-qB", "-TR", "-lt"], "client_deny": ["-TR2"]}
    )
    ok(await c.announce(OTHER, b"-qB4650-" + b"x" * 12))
    ok(await c.announce(OTHER, b"-TR4050-" + b"x" * 12))
    assert "banned" in failure(await c.announce(OTHER, b"-TR2940-" + b"x" * 12))
    r = await c.announce(OTHER, b"M7-2-3--" + b"\x01" * 12)
    assert failure(r) == "your BitTorrent client (M7-2-3--) is not one this tracker accepts"
    assert (await stats(c))[2] == 2


# --- scrape rules ------------------------------------------------------------------------------


async def test_listed_scrape_answers_only_listed_torrents(tracker_client, tmp_path):
    t = Torrent("a")
    t.write(tmp_path / "torrents")
    c = await tracker_client(
        base_dir=tmp_path, access={"mode": "listed", "torrents_dir": "torrents"}
    )
    ok(await c.announce(t.v1, pid(1)))
    r = ok(await c.scrape(t.v1, OTHER))
    assert r[b"files"] == {t.v1: {b"complete": 0, b"incomplete": 1, b"downloaded": 0}}


async def test_private_scrape_needs_a_passkey(tracker_client, tmp_path):
    t = Torrent("a")
    t.write(tmp_path / "torrents")
    write_lines(tmp_path / "keys.txt", KEY)
    c = await tracker_client(
        base_dir=tmp_path,
        access={"mode": "private", "torrents_dir": "torrents", "passkeys": "keys.txt"},
        scrape={"full_scrape": True},
    )
    ok(await c.announce(t.v1, pid(1), left=0, passkey=KEY))
    assert failure(await c.scrape(t.v1)) == NO_PASSKEY
    assert failure(await c.scrape(t.v1, passkey="bad")) == BAD_PASSKEY
    assert failure(await c.get("/scrape")) == NO_PASSKEY  # full scrape too
    for r in (
        await c.scrape(t.v1, passkey=KEY),
        await c.scrape(t.v1, path=f"/scrape/{KEY}"),
        await c.scrape(t.v1, path=f"/{KEY}/scrape"),
    ):
        assert ok(r)[b"files"][t.v1][b"complete"] == 1
    assert set(ok(await c.get(f"/scrape/{KEY}"))[b"files"]) == {t.v1}


async def test_full_scrape_once_per_address_per_period(tracker_client):
    c = await tracker_client(scrape={"full_scrape": True, "full_scrape_interval": 300})
    await c.announce(OTHER, pid(1))
    assert set(ok(await c.get("/scrape"))[b"files"]) == {OTHER}
    r = await c.get("/scrape")
    assert failure(r) == "one full scrape per 300 s per address; try again later"
    ok(await c.scrape(OTHER))  # scraping named torrents is not limited
    c.tracker.budgets.full_scrapes.clear()  # what the period's end does
    ok(await c.get("/scrape"))
    c = await tracker_client(scrape={"full_scrape": True, "full_scrape_interval": 0})
    for _ in range(3):
        ok(await c.get("/scrape"))


async def test_full_scrape_lists_only_tracked_swarms(tracker_client, tmp_path):
    t, u = Torrent("a"), Torrent("b")
    t.write(tmp_path / "torrents")
    u.write(tmp_path / "torrents")
    c = await tracker_client(
        base_dir=tmp_path,
        access={"mode": "listed", "torrents_dir": "torrents"},
        scrape={"full_scrape": True},
    )
    ok(await c.announce(t.v1, pid(1)))
    ok(await c.announce(u.v1, pid(1)))
    write_lines(tmp_path / "deny.txt")  # not configured: only the folder counts
    (tmp_path / "torrents" / f"{u.v1.hex()}.torrent").unlink()
    await c.tracker.access.refresh()
    assert set(ok(await c.get("/scrape"))[b"files"]) == {t.v1}


# --- hybrid torrents ---------------------------------------------------------------------------


async def test_hybrid_torrent_hashes_share_one_swarm(tracker_client, tmp_path):
    h = Torrent("hybrid", "hybrid")
    h.write(tmp_path / "torrents")
    c = await tracker_client(base_dir=tmp_path, access={"torrents_dir": "torrents"})  # open mode
    assert c.tracker.access.active is True
    ok(await c.announce(h.v1, pid(1), port=1001, left=0))  # a v1-only client
    # A hybrid client (libtorrent 2) announces both hashes with one peer_id: one peer.
    r = ok(await c.announce(h.v2, pid(2), port=1002))
    assert (r[b"complete"], r[b"incomplete"]) == (1, 1)
    r = ok(await c.announce(h.v1, pid(2), port=1002))
    assert compact(r[b"peers"]) == [(LOCAL, 1001)]
    assert await stats(c) == (1, 1, 1)
    # Scrape answers under the hash that was asked, from the one swarm.
    counts = {b"complete": 1, b"incomplete": 1, b"downloaded": 0}
    assert ok(await c.scrape(h.v1, h.v2))[b"files"] == {h.v1: counts, h.v2: counts}
    assert ok(await c.scrape(h.v2))[b"files"] == {h.v2: counts}
    # stopped under the other hash removes the peer.
    ok(await c.announce(h.v2, pid(2), port=1002, event="stopped"))
    assert await stats(c) == (1, 1, 0)


async def test_hybrid_answers_name_peers_that_used_the_same_hash(tracker_client, tmp_path):
    """A hybrid-aware client greets a peer with the hash of the answer that named it, so a
    v1-only peer must not be named in an answer to a v2 announce (nor the reverse)."""
    h = Torrent("hybrid", "hybrid")
    h.write(tmp_path / "torrents")
    c = await tracker_client(base_dir=tmp_path, access={"torrents_dir": "torrents"})
    ok(await c.announce(h.v1, pid(1), port=1001, left=0))  # v1-only seeder
    ok(await c.announce(h.v2, pid(2), port=1002, left=0))  # hybrid seeder: both hashes
    ok(await c.announce(h.v1, pid(2), port=1002, left=0))
    ok(await c.announce(h.v2, pid(3), port=1003, left=0))  # v2-only seeder
    r = ok(await c.announce(h.v2, pid(4), port=1004))  # a v2 leecher
    assert sorted(p for _, p in compact(r[b"peers"])) == [1002, 1003]
    assert r[b"complete"] == 3
    r = ok(await c.announce(h.v1, pid(5), port=1005))  # a v1 leecher
    assert sorted(p for _, p in compact(r[b"peers"])) == [1001, 1002]
    r = ok(await c.announce(h.v1, pid(5), port=1005, compact=0))
    assert sorted(p[b"port"] for p in r[b"peers"]) == [1001, 1002]
    # A seeder announcing v2 gets the leechers that used v2; once pid(5) uses v2 too, it counts.
    r = ok(await c.announce(h.v2, pid(2), port=1002, left=0))
    assert [p for _, p in compact(r[b"peers"])] == [1004]
    ok(await c.announce(h.v2, pid(5), port=1005))
    r = ok(await c.announce(h.v2, pid(2), port=1002, left=0))
    assert sorted(p for _, p in compact(r[b"peers"])) == [1004, 1005]
    assert await stats(c) == (1, 3, 2)


async def test_v2_only_torrents_are_listed_by_their_truncated_hash(tracker_client, tmp_path):
    t = Torrent("v2", "v2")
    t.write(tmp_path / "torrents")
    c = await tracker_client(
        base_dir=tmp_path, access={"mode": "listed", "torrents_dir": "torrents"}
    )
    ok(await c.announce(t.v2, pid(1)))


async def test_denying_one_hash_of_a_hybrid_denies_both(tracker_client, tmp_path):
    h = Torrent("hybrid", "hybrid")
    h.write(tmp_path / "torrents")
    write_lines(tmp_path / "deny.txt", h.v2.hex())
    c = await tracker_client(
        base_dir=tmp_path, access={"torrents_dir": "torrents", "deny_list": "deny.txt"}
    )
    assert failure(await c.announce(h.v1, pid(1))) == DENIED
    assert failure(await c.announce(h.v2, pid(1))) == DENIED


# --- changes at runtime ------------------------------------------------------------------------


async def test_rescan_picks_up_new_files_and_drops_removed_swarms(tracker_client, tmp_path):
    folder = tmp_path / "torrents"
    a, b = Torrent("a"), Torrent("b", "hybrid")
    path_a = a.write(folder)
    c = await tracker_client(
        base_dir=tmp_path, access={"mode": "listed", "torrents_dir": "torrents"}
    )
    ok(await c.announce(a.v1, pid(1)))
    assert failure(await c.announce(b.v2, pid(1))) == UNREGISTERED
    b.write(folder / "sub")  # subfolders count
    await c.tracker.access.refresh()
    ok(await c.announce(b.v2, pid(1)))
    ok(await c.announce(b.v1, pid(2)))
    assert await stats(c) == (2, 0, 3)
    path_a.unlink()
    await c.tracker.access.refresh()
    assert await stats(c) == (1, 0, 2)  # a's swarm was dropped at once
    assert failure(await c.announce(a.v1, pid(1))) == UNREGISTERED


async def test_broken_and_odd_files_in_the_folder_are_skipped(tracker_client, tmp_path, caplog):
    folder = tmp_path / "torrents"
    good = Torrent("good")
    good.write(folder)
    (folder / "broken.torrent").write_bytes(b"d4:infoi1ee")
    (folder / "empty.torrent").write_bytes(b"")
    (folder / "notes.txt").write_text("not a torrent")
    Torrent("partial").write(folder, ".partial.torrent")  # an editor's or rsync's temp file
    with caplog.at_level(logging.WARNING, "johnlocke.admission"):
        c = await tracker_client(
            base_dir=tmp_path, access={"mode": "listed", "torrents_dir": "torrents"}
        )
    assert "broken.torrent: no info dictionary" in caplog.text
    assert "empty.torrent: not a bencoded dictionary" in caplog.text
    assert "notes.txt" not in caplog.text and "partial" not in caplog.text
    assert c.tracker.access.rules.allowed == {good.v1}
    ok(await c.announce(good.v1, pid(1)))
    # A broken file is reported once, not on every rescan.
    caplog.clear()
    await c.tracker.access.refresh()
    assert "broken.torrent" not in caplog.text


async def test_list_changes_apply_on_refresh_and_deny_drops_the_swarm(tracker_client, tmp_path):
    a, b = b"\xaa" * 20, b"\xbb" * 20
    allow = write_lines(tmp_path / "allow.txt", a.hex(), b.hex())
    deny = write_lines(tmp_path / "deny.txt")
    c = await tracker_client(
        base_dir=tmp_path,
        access={"mode": "listed", "allow_list": "allow.txt", "deny_list": "deny.txt"},
    )
    ok(await c.announce(a, pid(1)))
    ok(await c.announce(b, pid(1)))
    write_lines(deny, b.hex())
    await c.tracker.access.refresh()
    assert failure(await c.announce(b, pid(2))) == DENIED
    assert await stats(c) == (1, 0, 1)
    write_lines(allow, b.hex())
    await c.tracker.access.refresh()
    assert failure(await c.announce(a, pid(2))) == UNREGISTERED
    assert await stats(c) == (0, 0, 0)


async def test_a_vanished_list_keeps_its_last_contents(tracker_client, tmp_path, caplog):
    write_lines(tmp_path / "keys.txt", KEY)
    t = Torrent("a")
    t.write(tmp_path / "torrents")
    c = await tracker_client(
        base_dir=tmp_path,
        access={"mode": "private", "torrents_dir": "torrents", "passkeys": "keys.txt"},
    )
    (tmp_path / "keys.txt").unlink()
    os.rename(tmp_path / "torrents", tmp_path / "moved")
    with caplog.at_level(logging.ERROR, "johnlocke.admission"):
        await c.tracker.access.refresh()
        await c.tracker.access.refresh()
    assert caplog.text.count("keys.txt: cannot read") == 1  # once, not per rescan
    assert caplog.text.count("torrents: no such directory") == 1
    ok(await c.announce(t.v1, pid(1), passkey=KEY))


async def test_passkey_removed_from_the_file_stops_working(tracker_client, tmp_path):
    keys = write_lines(tmp_path / "keys.txt", KEY, KEY2)
    t = Torrent("a")
    t.write(tmp_path / "torrents")
    c = await tracker_client(
        base_dir=tmp_path,
        access={"mode": "private", "torrents_dir": "torrents", "passkeys": "keys.txt"},
    )
    ok(await c.announce(t.v1, pid(1), passkey=KEY2))
    write_lines(keys, KEY)
    await c.tracker.access.refresh()
    assert failure(await c.announce(t.v1, pid(1), passkey=KEY2)) == BAD_PASSKEY
    ok(await c.announce(t.v1, pid(2), passkey=KEY))


async def test_switching_open_to_listed_drops_unlisted_swarms(tracker_client, tmp_path):
    from johnlocke.config import validate

    t = Torrent("a")
    t.write(tmp_path / "torrents")
    c = await tracker_client(base_dir=tmp_path)
    ok(await c.announce(t.v1, pid(1)))
    ok(await c.announce(OTHER, pid(1)))
    listed = validate({"access": {"mode": "listed", "torrents_dir": "torrents"}}, "x")
    await c.tracker.access.reload(listed)
    c.tracker.reload(listed)
    assert await stats(c) == (1, 0, 1)
    assert failure(await c.announce(OTHER, pid(1))) == UNREGISTERED


# --- abuse limits ------------------------------------------------------------------------------


async def test_announces_sooner_than_min_interval_are_answered_but_not_recorded(tracker_client):
    c = await tracker_client(
        announce={"interval": 120, "min_interval": 60, "peer_timeout": 300},
        limits={"enforce_min_interval": True},
    )
    ok(await c.announce(OTHER, pid(1), port=1001, left=5, event="started"))
    ok(await c.announce(OTHER, pid(2), port=1002, left=0))
    # Too soon: peers and counts as usual, plus a warning; nothing changes (it is still the
    # leecher it was, and gets the seeder).
    r = ok(await c.announce(OTHER, pid(1), port=1001, left=0))
    assert compact(r[b"peers"]) == [(LOCAL, 1002)]
    assert r[b"complete"] == 1 and r[b"incomplete"] == 1
    assert r[b"warning message"] == (
        b"announce not recorded: sent less than the min interval (60 s) after the last one"
    )
    assert (await stats(c))[1:] == (1, 1)
    r = ok(await c.announce(OTHER, pid(1), port=1009))  # a new port is not taken either
    r = ok(await c.announce(OTHER, pid(3), port=1003))
    assert {p for _, p in compact(r[b"peers"])} == {1001, 1002}
    # "completed" and "stopped" are never limited.
    r = ok(await c.announce(OTHER, pid(1), port=1001, left=0, event="completed"))
    assert b"warning message" not in r and r[b"complete"] == 2 and r[b"downloaded"] == 1
    r = ok(await c.announce(OTHER, pid(1), port=1001, event="stopped"))
    assert r[b"complete"] == 1


async def test_held_announces_follow_the_strategys_shorter_interval(tracker_client):
    from johnlocke.store.memory import MemoryStore

    from .store_contract import Clock

    clock = Clock()
    c = await tracker_client(
        store=MemoryStore(clock=clock),
        announce={"interval": 1800, "min_interval": 900},
        limits={"enforce_min_interval": True},
        strategy={"name": "small-group", "options": {"interval": 60}},
    )
    ok(await c.announce(OTHER, pid(1), port=1001))
    ok(await c.announce(OTHER, pid(2), port=1002))
    clock.t += 30
    r = ok(await c.announce(OTHER, pid(1), port=1009))
    assert r[b"min interval"] == 60 and b"(60 s)" in r[b"warning message"]
    clock.t += 31
    r = ok(await c.announce(OTHER, pid(1), port=1009))
    assert b"warning message" not in r
    r = ok(await c.announce(OTHER, pid(2), port=1002))
    assert compact(r[b"peers"]) == [(LOCAL, 1009)]


async def test_per_ip_cap_on_peers_in_one_torrent(tracker_client):
    c = await tracker_client(limits={"max_peers_per_ip": 2})
    ok(await c.announce(OTHER, pid(1), port=1001))
    ok(await c.announce(OTHER, pid(2), port=1002))
    r = await c.announce(OTHER, pid(3), port=1003)
    assert failure(r) == "too many peers from your address in this torrent (at most 2)"
    ok(await c.announce(OTHER, pid(1), port=1001))  # known peers go on announcing
    ok(await c.announce(b"\x01" * 20, pid(3), port=1003))  # another torrent is fine
    ok(await c.announce(OTHER, pid(2), port=1002, event="stopped"))
    ok(await c.announce(OTHER, pid(3), port=1003))


async def test_ipv6_addresses_count_by_their_64(tracker_client):
    c = await tracker_client(
        announce={"allow_ip_param": True},
        limits={"max_peers_per_ip": 2, "max_new_swarms_per_ip": 1},
    )
    ok(await c.announce(OTHER, pid(1), port=1001, ip="2001:db8:1:2::1"))
    ok(await c.announce(OTHER, pid(2), port=1002, ip="2001:db8:1:2::ffff"))
    r = await c.announce(OTHER, pid(3), port=1003, ip="2001:db8:1:2:abcd::3")
    assert failure(r) == "too many peers from your address in this torrent (at most 2)"
    ok(await c.announce(OTHER, pid(3), port=1003, ip="2001:db8:1:3::1"))  # another /64


async def test_per_ip_cap_on_new_swarms_per_minute(tracker_client):
    c = await tracker_client(limits={"max_new_swarms_per_ip": 3})
    for n in range(3):
        ok(await c.announce(bytes([n]) * 20, pid(1)))
    r = await c.announce(b"\x09" * 20, pid(1))
    assert failure(r) == (
        "too many new torrents from your address (at most 3 a minute); try again in a minute"
    )
    assert (await stats(c))[0] == 3
    ok(await c.announce(b"\x00" * 20, pid(2)))  # joining existing swarms is fine
    c.tracker.budgets.minute -= 1  # the minute is over
    ok(await c.announce(b"\x09" * 20, pid(1)))


async def test_limits_are_off_by_default_for_natted_users(tracker_client):
    c = await tracker_client()
    for n in range(30):
        ok(await c.announce(bytes([n]) * 20, pid(n), port=1000 + n))
        ok(await c.announce(OTHER, pid(n), port=1000 + n))
        r = ok(await c.announce(OTHER, pid(n), port=1000 + n))
        assert b"warning message" not in r
    assert await stats(c) == (31, 0, 60)


@pytest.mark.parametrize("mode", ["listed", "private"])
async def test_stopped_and_completed_go_through_the_same_checks(tracker_client, tmp_path, mode):
    write_lines(tmp_path / "keys.txt", KEY)
    t = Torrent("a")
    t.write(tmp_path / "torrents")
    c = await tracker_client(
        base_dir=tmp_path, access={"mode": mode, "torrents_dir": "torrents", "passkeys": "keys.txt"}
    )
    ok(await c.announce(t.v1, pid(1), passkey=KEY))
    r = await c.announce(OTHER, pid(1), event="stopped", passkey=KEY)
    assert failure(r) == UNREGISTERED
    if mode == "private":
        assert failure(await c.announce(t.v1, pid(1), event="stopped")) == NO_PASSKEY
        assert await stats(c) == (1, 0, 1)


async def test_a_rescan_that_finds_nothing_new_keeps_the_rules(tracker_client, tmp_path):
    Torrent("a").write(tmp_path / "torrents")
    allow = write_lines(tmp_path / "allow.txt", OTHER.hex())
    c = await tracker_client(
        base_dir=tmp_path,
        access={"mode": "listed", "torrents_dir": "torrents", "allow_list": "allow.txt"},
    )
    rules = c.tracker.access.rules
    await c.tracker.access.refresh()
    assert c.tracker.access.rules is rules
    write_lines(allow, OTHER.hex(), (b"\x01" * 20).hex())
    await c.tracker.access.refresh()
    assert c.tracker.access.rules is not rules
    ok(await c.announce(b"\x01" * 20, pid(1)))


async def test_reading_a_big_list_leaves_the_event_loop_free(tracker_client, tmp_path):

    allow = tmp_path / "allow.txt"
    allow.write_text("".join(os.urandom(20).hex() + "\n" for _ in range(200_000)))
    c = await tracker_client(
        base_dir=tmp_path, access={"mode": "listed", "allow_list": "allow.txt"}
    )
    with allow.open("a") as fh:
        fh.write(OTHER.hex() + "\n")
    async with LoopTurns() as turns:
        await c.tracker.access.refresh()
    assert turns.count >= 2  # the loop kept running while the list was read and the set built
    assert len(c.tracker.access.rules.allowed) == 200_001
    ok(await c.announce(OTHER, pid(1)))
