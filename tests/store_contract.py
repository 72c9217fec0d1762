"""The contract every swarm store driver must keep (memory now, Redis later).

A driver's test module subclasses ``StoreContract`` and provides a ``make_store`` fixture: a
function taking a clock (a callable returning seconds) and returning a fresh, empty store.
"""

from __future__ import annotations

import random

import pytest

from johnlocke.errors import ClientError
from johnlocke.store import ADDR_LEN, IPV4, IPV6, WEBRTC, SwarmNotFound

IH = b"\x11" * 20
IH2 = b"\x22" * 20


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def pid(n: int) -> bytes:
    return b"-XX0001-" + n.to_bytes(12, "big")


def v4(n: int, port: int = 6881) -> bytes:
    return bytes([10, (n >> 16) & 255, (n >> 8) & 255, n & 255]) + port.to_bytes(2, "big")


def v6(n: int, port: int = 6881) -> bytes:
    return b"\x20\x01\x0d\xb8" + bytes(8) + n.to_bytes(4, "big") + port.to_bytes(2, "big")


def rtc(n: int) -> bytes:
    """A WebRTC endpoint id (8 opaque bytes chosen by the WebSocket frontend)."""
    return b"\xee\x01" + n.to_bytes(6, "big")


def addrs_of(view, seeders: bool, k: int = 10_000, seed: int = 1) -> list[bytes]:
    """The compact addresses a view hands out for one role, in order."""
    blob = view.compact(view.sample(seeders, k, random.Random(seed)))
    w = ADDR_LEN[view.family]
    return [blob[i : i + w] for i in range(0, len(blob), w)]


def ids_of(view, seeders: bool, k: int = 10_000, rng: random.Random | None = None) -> list[bytes]:
    return [c.peer_id for c in view.candidates(seeders, k, rng or random.Random(1))]


def number(peer_id: bytes) -> int:
    return int.from_bytes(peer_id[8:], "big")


class StoreContract:
    @pytest.fixture
    def clock(self):
        return Clock()

    @pytest.fixture
    async def store(self, make_store, clock):
        s = make_store(clock)
        yield s
        await s.close()

    async def join(self, store, n, seeder=False, ih=IH, addr=None, key=0, completed=False):
        return await store.announce(ih, pid(n), addr or v4(n), seeder, key, completed)

    async def counts(self, store, ih=IH):
        (row,) = await store.scrape([ih])
        return row[1:]

    # --- membership and counts ---------------------------------------------------------------

    async def test_first_announce_creates_the_swarm(self, store):
        view = await self.join(store, 1)
        assert (view.complete, view.incomplete, view.downloaded) == (0, 1, 0)
        assert await self.counts(store) == (0, 1, 0)

    async def test_unknown_swarm_scrapes_as_zeros(self, store):
        assert await store.scrape([IH2]) == [(IH2, 0, 0, 0)]

    async def test_reannounce_does_not_duplicate(self, store):
        for _ in range(3):
            await self.join(store, 1)
        await self.join(store, 2, seeder=True)
        await self.join(store, 2, seeder=True)
        assert await self.counts(store) == (1, 1, 0)

    async def test_swarms_are_separate(self, store):
        await self.join(store, 1)
        await self.join(store, 1, ih=IH2, seeder=True)
        assert await store.scrape([IH, IH2]) == [(IH, 0, 1, 0), (IH2, 1, 0, 0)]
        assert sorted(await store.scrape_all()) == [(IH, 0, 1, 0), (IH2, 1, 0, 0)]
        assert await store.stats() == (2, 1, 1, 0, 0, 0, 0)

    # --- completion --------------------------------------------------------------------------

    async def test_leecher_becoming_seeder_counts_one_download(self, store):
        await self.join(store, 1)
        view = await self.join(store, 1, seeder=True)
        assert view.completed is True
        assert (view.complete, view.incomplete, view.downloaded) == (1, 0, 1)
        # rtorrent's late "completed", and later announces, do not count again.
        view = await self.join(store, 1, seeder=True, completed=True)
        assert view.completed is False
        await self.join(store, 1, seeder=True)
        assert await self.counts(store) == (1, 0, 1)

    async def test_seeder_arriving_seeded_is_not_a_download(self, store):
        view = await self.join(store, 1, seeder=True)
        assert view.completed is False
        assert await self.counts(store) == (1, 0, 0)

    async def test_unknown_peer_announcing_completed_counts(self, store):
        await self.join(store, 1, seeder=True, completed=True)
        assert await self.counts(store) == (1, 0, 1)

    async def test_each_completing_peer_counts_once(self, store):
        for n in range(5):
            await self.join(store, n)
        for n in range(5):
            await self.join(store, n, seeder=True)
            await self.join(store, n, seeder=True, completed=True)
        assert await self.counts(store) == (5, 0, 5)

    # --- removal -----------------------------------------------------------------------------

    async def test_remove(self, store):
        await self.join(store, 1)
        await self.join(store, 2, seeder=True)
        assert await store.remove(IH, pid(1), v4(1), 0) == (1, 0, 0)
        assert await store.remove(IH, pid(1), v4(1), 0) == (1, 0, 0)  # twice is harmless
        assert await store.remove(IH2, pid(1), v4(1), 0) == (0, 0, 0)  # unknown swarm

    async def test_remove_from_another_ip_needs_the_key(self, store):
        await self.join(store, 1, key=77)
        with pytest.raises(ClientError):
            await store.remove(IH, pid(1), v4(2), 0)
        with pytest.raises(ClientError):
            await store.remove(IH, pid(1), v4(2), 78)
        assert await self.counts(store) == (0, 1, 0)
        assert await store.remove(IH, pid(1), v4(2), 77) == (0, 0, 0)

    # --- identity ----------------------------------------------------------------------------

    async def test_same_ip_new_port_updates_the_peer(self, store):
        await self.join(store, 1, addr=v4(1, 1000))
        view = await self.join(store, 2)
        view = await self.join(store, 2, seeder=True)
        await self.join(store, 1, addr=v4(1, 2000))
        view = await self.join(store, 2, seeder=True)
        assert addrs_of(view, False) == [v4(1, 2000)]

    async def test_other_ip_with_same_key_moves_the_peer(self, store):
        await self.join(store, 1, key=5)
        await self.join(store, 1, key=5, addr=v4(99))
        view = await self.join(store, 2, seeder=True)
        assert addrs_of(view, False) == [v4(99)]
        assert await self.counts(store) == (1, 1, 0)

    @pytest.mark.parametrize("stored,sent", [(0, 0), (5, 0), (5, 6), (0, 6)])
    async def test_other_ip_without_the_key_is_refused_and_changes_nothing(
        self, store, stored, sent
    ):
        await self.join(store, 1, key=stored)
        with pytest.raises(ClientError, match="another address"):
            await self.join(store, 1, key=sent, addr=v4(99), seeder=True)
        view = await self.join(store, 2, seeder=True)
        assert addrs_of(view, False) == [v4(1)]
        assert await self.counts(store) == (1, 1, 0)

    # --- dual-stack peers (BEP 7): one record per family --------------------------------------

    @pytest.mark.parametrize("key", [0, 77])
    async def test_a_peer_announces_from_both_families_with_or_without_key(self, store, key):
        await self.join(store, 1, key=key)  # IPv4
        view = await self.join(store, 1, key=key, addr=v6(1))  # the same peer_id over IPv6
        assert view.family == IPV6 and view.addr == v6(1)
        # One peer, two records: counted once, an address in each family.
        assert (view.complete, view.incomplete) == (0, 1)
        assert await self.counts(store) == (0, 1, 0)
        assert await store.stats() == (1, 0, 1, 0, 1, 0, 0)
        view4 = await self.join(store, 2)
        assert addrs_of(view4, False) == [v4(1)]
        assert (view4.complete, view4.incomplete) == (0, 2)
        view6 = await self.join(store, 3, addr=v6(3))
        assert addrs_of(view6, False) == [v6(1)]
        # Announcing over IPv4 again hides it from neither family.
        await self.join(store, 1, key=key)
        view6 = await self.join(store, 3, addr=v6(3))
        assert addrs_of(view6, False) == [v6(1)]
        assert addrs_of(await self.join(store, 2), False) == [v4(1)]

    async def test_the_key_rule_holds_within_a_family(self, store):
        await self.join(store, 1, key=5)
        await self.join(store, 1, addr=v6(1))  # a new family: no key asked for
        with pytest.raises(ClientError, match="another address"):
            await self.join(store, 1, addr=v4(99))  # another IPv4 address without the key
        with pytest.raises(ClientError, match="another address"):
            await self.join(store, 1, addr=v6(99))  # the IPv6 record was made without a key
        await self.join(store, 1, key=5, addr=v4(99))  # with its key it moves
        view = await self.join(store, 2)
        assert addrs_of(view, False) == [v4(99)]
        assert addrs_of(await self.join(store, 3, addr=v6(3)), False) == [v6(1)]
        assert await self.counts(store) == (0, 3, 0)

    async def test_the_role_is_the_peers_and_moves_every_record(self, store):
        await self.join(store, 1)
        await self.join(store, 1, addr=v6(1))
        view = await self.join(store, 1, addr=v6(1), seeder=True)  # completes over IPv6
        assert view.completed is True and view.seeder is True
        assert (view.complete, view.incomplete, view.downloaded) == (1, 0, 1)
        assert await store.stats() == (1, 1, 0, 1, 0, 0, 0)
        view4 = await self.join(store, 2)
        assert addrs_of(view4, True) == [v4(1)] and addrs_of(view4, False) == []
        # The IPv4 record says seeder too now: its next announce (a seeder's) counts nothing.
        view = await self.join(store, 1, seeder=True, completed=True)
        assert view.completed is False
        assert await self.counts(store) == (1, 1, 1)
        # And back: a seeder that starts leeching again moves both records.
        view = await self.join(store, 1)
        assert view.completed is False
        assert await store.stats() == (1, 0, 2, 0, 1, 0, 0)
        assert addrs_of(await self.join(store, 3, addr=v6(3), seeder=True), False) == [v6(1)]
        assert await self.counts(store) == (1, 2, 1)

    async def test_a_new_family_takes_the_role_it_announces(self, store):
        await self.join(store, 1)  # an IPv4 leecher
        view = await self.join(store, 1, addr=v6(1), seeder=True)  # arrives seeding over IPv6
        assert view.completed is True  # a known leecher finished: once
        assert await store.stats() == (1, 1, 0, 1, 0, 0, 0)
        # A known seeder in a new family with "completed" is no new download.
        view = await self.join(store, 1, addr=rtc(1), seeder=True, completed=True)
        assert view.completed is False
        assert await self.counts(store) == (1, 0, 1)
        # A known seeder that arrives leeching in a new family makes the peer a leecher.
        await self.join(store, 2, seeder=True)
        view = await self.join(store, 2, addr=v6(2))
        assert await store.stats() == (1, 1, 1, 1, 1, 1, 0)
        assert (view.complete, view.incomplete) == (1, 1)

    async def test_completion_counts_once_per_peer(self, store):
        for n in range(3):
            await self.join(store, n)
            await self.join(store, n, addr=v6(n))
        for n in range(3):
            await self.join(store, n, seeder=True, completed=True)
            await self.join(store, n, seeder=True, completed=True, addr=v6(n))
        assert await self.counts(store) == (3, 0, 3)

    async def test_stop_in_one_family_keeps_the_peer(self, store):
        await self.join(store, 1, key=9)
        await self.join(store, 1, key=9, addr=v6(1))
        with pytest.raises(ClientError):
            await store.remove(IH, pid(1), v6(50), 0)  # another IPv6 address, no key
        assert await store.remove(IH, pid(1), v6(1), 0) == (0, 1, 0)  # still counted
        assert await store.stats() == (1, 0, 1, 0, 0, 0, 0)
        assert addrs_of(await self.join(store, 2, addr=v6(2)), False) == []
        assert addrs_of(await self.join(store, 3), False) == [v4(1)]
        # A stop from a family it has no record in changes nothing.
        assert await store.remove(IH, pid(1), rtc(1), 0) == (0, 3, 0)
        assert await store.remove(IH, pid(1), v4(1), 0) == (0, 2, 0)  # now it is gone
        assert addrs_of(await self.join(store, 3), False) == []

    async def test_sweep_expires_each_record_by_its_own_last_seen(self, store, clock):
        await self.join(store, 1)
        await self.join(store, 1, addr=v6(1))
        clock.t += 100
        await self.join(store, 1)  # only the IPv4 record is fresh
        assert await store.sweep(store.now() - 50) == 1
        assert await self.counts(store) == (0, 1, 0)
        assert await store.stats() == (1, 0, 1, 0, 0, 0, 0)
        assert addrs_of(await self.join(store, 2, addr=v6(2)), False) == []
        assert addrs_of(await self.join(store, 3), False) == [v4(1)]

    async def test_hold_and_max_per_ip_apply_per_record(self, store, clock):
        await self.join(store, 1)
        clock.t += 5
        # A new family's record is never held; the IPv4 record is.
        view = await store.announce(IH, pid(1), v6(1), False, 0, False, hold=30)
        assert view.updated is True
        view = await store.announce(IH, pid(1), v4(1), True, 0, False, hold=30)
        assert view.updated is False and view.seeder is False
        # max_per_ip counts records per IP: the peer's IPv4 record is one.
        with pytest.raises(ClientError, match="at most 1"):
            await store.announce(IH, pid(2), v4(1, 7000), False, 0, False, max_per_ip=1)
        await store.announce(IH, pid(1), rtc(1), False, 0, False, max_per_ip=1)
        assert await store.stats() == (1, 0, 1, 0, 1, 0, 1)

    async def test_views_hand_out_only_the_announcers_family_never_itself(self, store):
        for n in range(10):
            await self.join(store, n, seeder=n < 3)
            await self.join(store, n, seeder=n < 3, addr=v6(n))
        for n in range(10):
            for addr in (v4(n), v6(n)):
                view = await self.join(store, n, seeder=n < 3, addr=addr)
                got = ids_of(view, True) + ids_of(view, False)
                assert pid(n) not in got and len(got) == 9
                assert {len(c.addr) for c in view.candidates(False, 50, random.Random(2))} == {
                    len(addr)
                }
                assert (view.complete, view.incomplete) == (3, 7)

    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_multi_family_churn_matches_a_model(self, store, clock, seed):
        """Random announces, role changes, stops and sweeps of peers in up to three families,
        through a swarm that grows big and shrinks small again, against a plain model."""
        rng = random.Random(seed)
        addr_of = (v4, v6, rtc)
        records: dict[int, dict[int, int]] = {}  # peer -> family -> last seen
        role: dict[int, bool] = {}  # peer -> seeder
        downloaded = 0

        async def check():
            seeders = sum(1 for n in records if role[n])
            assert await self.counts(store) == (seeders, len(records) - seeders, downloaded)
            per_table = [0] * 6
            for n, fams in records.items():
                for f in fams:
                    per_table[f << 1 | (not role[n])] += 1
            assert await store.stats() == (1 if records else 0, *per_table)

        for step in range(3000):
            space = 250 if step < 1500 else 20  # grow big, then shrink to a few peers
            n = rng.randrange(space)
            f = rng.choice((0, 0, 0, 1, 1, 2))
            op = rng.random()
            if op < 0.7:
                seeder = rng.random() < 0.3
                completed = seeder and rng.random() < 0.2
                known = n in records
                if (known and not role[n] and seeder) or (not known and completed):
                    downloaded += 1
                await self.join(store, n, seeder=seeder, addr=addr_of[f](n), completed=completed)
                records.setdefault(n, {})[f] = store.now()
                role[n] = seeder
            elif op < 0.97:
                await store.remove(IH, pid(n), addr_of[f](n), 0)
                if f in records.get(n, {}):
                    del records[n][f]
                    if not records[n]:
                        del records[n]
            else:
                clock.t += 10
                cutoff = store.now() - 25
                for m in list(records):
                    records[m] = {g: t for g, t in records[m].items() if t >= cutoff}
                    if not records[m]:
                        del records[m]
                await store.sweep(cutoff)
                if not records:
                    downloaded = 0  # the swarm went with its last peer
            if step % 50 == 0 or step > 2950:
                await check()
        # Every family's view hands out exactly that family's records, never the announcer's.
        for f in range(3):
            view = await self.join(store, 9999, addr=addr_of[f](9999))
            got = ids_of(view, True) + ids_of(view, False)
            assert sorted(got) == sorted(pid(m) for m, fams in records.items() if f in fams)

    # --- WebRTC peers (family 2) ----------------------------------------------------------------

    async def test_webrtc_peers_count_like_any_peer_and_stay_among_themselves(self, store):
        await self.join(store, 1, addr=rtc(1), seeder=True)
        await self.join(store, 2, addr=rtc(2))
        await self.join(store, 3)
        await self.join(store, 4, addr=v6(4))
        assert await self.counts(store) == (1, 3, 0)
        assert await store.stats() == (1, 0, 1, 0, 1, 1, 1)
        view = await self.join(store, 5, addr=rtc(5))
        assert view.family == WEBRTC and view.table == 5
        assert addrs_of(view, True) == [rtc(1)] and addrs_of(view, False) == [rtc(2)]
        assert view.count(True) == 1 and view.count(False) == 1
        assert view.peer_list(view.sample(True, 5, random.Random(1))) == [(rtc(1), pid(1))]
        # IPv4 and IPv6 announcers never get them.
        view4 = await self.join(store, 6)
        assert view4.family == IPV4 and addrs_of(view4, True) == []
        assert addrs_of(view4, False) == [v4(3)]
        view6 = await self.join(store, 7, addr=v6(7))
        assert addrs_of(view6, True) == [] and addrs_of(view6, False) == [v6(4)]
        # A completion counts, and a stop removes.
        view = await self.join(store, 2, addr=rtc(2), seeder=True)
        assert view.completed is True and view.downloaded == 1
        assert await store.remove(IH, pid(1), rtc(1), 0) == (1, 5, 1)

    async def test_webrtc_endpoint_ids_follow_the_key_rule(self, store):
        await self.join(store, 1, addr=rtc(1), key=3)
        with pytest.raises(ClientError, match="another address"):
            await self.join(store, 1, addr=rtc(2))  # another connection, without the key
        view = await self.join(store, 1, addr=rtc(2), key=3)  # with it: the peer moved
        assert view.addr == rtc(2)
        assert addrs_of(await self.join(store, 9, addr=rtc(9)), False) == [rtc(2)]
        assert await self.counts(store) == (0, 2, 0)

    @pytest.mark.parametrize("length", [0, 4, 7, 16, 17, 19, 20])
    async def test_an_address_of_no_family_is_refused(self, store, length):
        with pytest.raises(ValueError):
            await store.announce(IH, pid(1), bytes(length), False, 0, False)
        with pytest.raises(ValueError):
            await store.remove(IH, pid(1), bytes(length), 0)
        assert await store.stats() == (0, 0, 0, 0, 0, 0, 0)

    # --- what an announcer sees --------------------------------------------------------------

    async def test_sample_never_returns_the_announcer(self, store):
        for n in range(30):
            await self.join(store, n, seeder=n % 3 == 0)
        rng = random.Random(7)
        for n in range(30):
            view = await self.join(store, n, seeder=n % 3 == 0)
            for k in (1, 5, 9, 17, 28, 29, 100):
                ids = ids_of(view, True, k, rng) + ids_of(view, False, k, rng)
                assert pid(n) not in ids
                assert len(ids) == len(set(ids))
                assert len(ids) == min(k, 10 - view.seeder) + min(k, 20 - (not view.seeder))

    async def test_sample_respects_role_and_family(self, store):
        for n in range(10):
            await self.join(store, n, seeder=n < 4)
        for n in range(10, 15):
            await self.join(store, n, addr=v6(n), seeder=n < 12)
        view = await self.join(store, 20)
        assert set(ids_of(view, True)) == {pid(n) for n in range(4)}
        assert set(ids_of(view, False)) == {pid(n) for n in range(4, 10)}
        assert set(addrs_of(view, True)) == {v4(n) for n in range(4)}
        assert view.count(True) == 4 and view.count(False) == 6
        cands = view.candidates(True, 50, random.Random(1))
        assert all(c.seeder and c.ip == v4(number(c.peer_id))[:4] for c in cands)
        assert all(c.port == 6881 for c in cands)
        view6 = await self.join(store, 21, addr=v6(21))
        assert set(ids_of(view6, True)) == {pid(10), pid(11)}
        assert set(addrs_of(view6, True)) == {v6(10), v6(11)}
        assert view6.count(False) == 3
        assert (view6.complete, view6.incomplete) == (6, 11)

    async def test_compact_and_peer_list_agree(self, store):
        for n in range(40):
            await self.join(store, n)
        view = await self.join(store, 100)
        picks = view.sample(False, 25, random.Random(4))
        listed = view.peer_list(picks)
        assert [a for a, _ in listed] == addrs_of(view, False, 25, 4)
        assert all(a == v4(number(p)) for a, p in listed)
        assert len({p for _, p in listed}) == 25

    async def test_candidates_picks_send_those_peers(self, store):
        for n in range(40):
            await self.join(store, n, seeder=n < 10)
        view = await self.join(store, 100)
        cands = view.candidates(False, 12, random.Random(3))
        chosen = [c for c in cands if number(c.peer_id) % 2 == 0]
        blob = view.compact([c.pick for c in chosen])
        assert blob == b"".join(c.addr for c in chosen)

    async def test_sample_is_bounded_and_roughly_uniform(self, store):
        for n in range(200):
            await self.join(store, n)
        view = await self.join(store, 500)
        rng = random.Random(11)
        hits = dict.fromkeys(range(200), 0)
        for _ in range(800):
            got = ids_of(view, False, 25, rng)
            assert len(got) == len(set(got)) == 25
            for p in got:
                hits[number(p)] += 1
        # Each peer's expected count is 800 * 25 / 200 = 100.
        assert min(hits.values()) > 50 and max(hits.values()) < 160

    async def test_sample_is_deterministic_under_a_seeded_rng(self, store):
        for n in range(100):
            await self.join(store, n)
        view = await self.join(store, 1000)
        assert view.sample(False, 10, random.Random(42)) == view.sample(
            False, 10, random.Random(42)
        )

    async def test_candidates_carry_last_seen(self, store, clock):
        await self.join(store, 1)
        clock.t += 50
        view = await self.join(store, 2)
        (cand,) = view.candidates(False, 5, random.Random(0))
        assert cand.peer_id == pid(1)
        assert cand.last_seen == store.now() - 50 == view.now - 50

    # --- dropping a swarm ----------------------------------------------------------------------

    async def test_drop_forgets_the_swarm_and_only_it(self, store):
        for n in range(5):
            await self.join(store, n, seeder=n == 0)
        await self.join(store, 1, ih=IH2)
        assert await store.drop(IH) is True
        assert await store.drop(IH) is False
        assert await store.scrape([IH, IH2]) == [(IH, 0, 0, 0), (IH2, 0, 1, 0)]
        assert await store.stats() == (1, 0, 1, 0, 0, 0, 0)
        view = await self.join(store, 1)  # a later announce starts afresh
        assert (view.complete, view.incomplete, view.downloaded) == (0, 1, 0)
        assert view.created is True

    # --- hybrid torrents ----------------------------------------------------------------------

    async def test_proto_hands_out_only_peers_that_used_the_same_hash(self, store):
        await store.announce(IH, pid(1), v4(1), True, 0, False, proto=1)  # v1 only
        await store.announce(IH, pid(2), v4(2), True, 0, False, proto=1)  # both
        await store.announce(IH, pid(2), v4(2), True, 0, False, proto=2)
        await store.announce(IH, pid(3), v4(3), True, 0, False, proto=2)  # v2 only
        view = await store.announce(IH, pid(4), v4(4), False, 0, False, proto=2)
        assert (view.complete, view.incomplete) == (3, 1)  # one swarm, counted once
        assert sorted(addrs_of(view, True)) == [v4(2), v4(3)]
        assert [a for a, _ in view.peer_list(view.sample(True, 10, random.Random(1)))] != []
        assert {p for _, p in view.peer_list(view.sample(True, 10, random.Random(1)))} == {
            pid(2),
            pid(3),
        }
        assert {c.peer_id for c in view.candidates(True, 10, random.Random(1))} == {pid(2), pid(3)}
        view = await store.announce(IH, pid(4), v4(4), False, 0, False, proto=1)
        assert sorted(addrs_of(view, True)) == [v4(1), v4(2)]
        # Without proto (not a hybrid) nothing is filtered.
        view = await store.announce(IH, pid(9), v4(9), False, 0, False)
        assert sorted(addrs_of(view, True)) == [v4(1), v4(2), v4(3)]

    async def test_proto_bits_do_not_weaken_keys(self, store):
        key = 0xFFFF_FFFF
        await store.announce(IH, pid(1), v4(1), False, key, False, proto=2)
        with pytest.raises(ClientError):
            await store.announce(IH, pid(1), v4(2), False, key - 1, False, proto=1)
        await store.announce(IH, pid(1), v4(2), False, key, False, proto=1)
        with pytest.raises(ClientError):
            await store.remove(IH, pid(1), v4(3), key ^ (1 << 31))
        assert await store.remove(IH, pid(1), v4(3), key) == (0, 0, 0)

    # --- abuse limits ------------------------------------------------------------------------

    async def test_view_tells_created_and_updated(self, store):
        view = await self.join(store, 1)
        assert view.created is True and view.updated is True
        view = await self.join(store, 2)
        assert view.created is False and view.updated is True

    async def test_hold_answers_from_the_swarm_without_changing_it(self, store, clock):
        await self.join(store, 1, addr=v4(1, 1000))
        await self.join(store, 2, seeder=True)
        clock.t += 10
        # Too soon: neither the new port, nor the role, nor last_seen change.
        view = await store.announce(IH, pid(1), v4(1, 2000), True, 0, False, hold=30)
        assert view.updated is False and view.completed is False
        assert (view.complete, view.incomplete, view.downloaded) == (1, 1, 0)
        assert view.seeder is False
        assert addrs_of(view, True) == [v4(2)]  # still answered, never with itself
        view = await self.join(store, 3)
        cands = {c.peer_id: c for c in view.candidates(False, 10, random.Random(1))}
        assert cands[pid(1)].addr == v4(1, 1000)
        assert cands[pid(1)].last_seen == store.now() - 10
        # A completed event is never held: the caller passes hold=0.
        view = await store.announce(IH, pid(1), v4(1, 1000), True, 0, True)
        assert view.updated is True and view.completed is True
        clock.t += 30
        view = await store.announce(IH, pid(2), v4(2), True, 0, False, hold=30)
        assert view.updated is True
        # A stranger is never held, and a peer from another IP without its key is still refused.
        view = await store.announce(IH, pid(9), v4(9), False, 0, False, hold=30)
        assert view.updated is True and view.incomplete == 2
        with pytest.raises(ClientError, match="another address"):
            await store.announce(IH, pid(9), v4(10), False, 0, False, hold=30)

    async def test_max_per_ip_caps_new_peers_from_one_address(self, store):
        same = bytes([10, 9, 9, 9])
        for n in range(3):
            await store.announce(
                IH, pid(n), same + bytes([0, n + 1]), False, 0, False, max_per_ip=3
            )
        with pytest.raises(ClientError, match="at most 3"):
            await store.announce(IH, pid(3), same + b"\x00\x09", False, 0, False, max_per_ip=3)
        assert await self.counts(store) == (0, 3, 0)
        # Known peers may re-announce and change role; other addresses and swarms are free.
        await store.announce(IH, pid(0), same + b"\x00\x01", True, 0, False, max_per_ip=3)
        await store.announce(IH, pid(4), v4(4), False, 0, False, max_per_ip=3)
        await store.announce(IH2, pid(5), same + b"\x00\x05", False, 0, False, max_per_ip=3)
        # One leaving makes room for one more.
        await store.remove(IH, pid(1), same + b"\x00\x02", 0)
        await store.announce(IH, pid(6), same + b"\x00\x06", False, 0, False, max_per_ip=3)
        with pytest.raises(ClientError):
            await store.announce(IH, pid(7), same + b"\x00\x07", False, 0, False, max_per_ip=3)
        assert await self.counts(store) == (1, 3, 1)

    async def test_max_per_ip_follows_moves_and_expiry(self, store, clock):
        a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        await store.announce(IH, pid(1), a + b"\x00\x01", False, 5, False, max_per_ip=1)
        with pytest.raises(ClientError):
            await store.announce(IH, pid(2), a + b"\x00\x02", False, 0, False, max_per_ip=1)
        # The peer moves to b (with its key): a is free, b is full.
        await store.announce(IH, pid(1), b + b"\x00\x01", False, 5, False, max_per_ip=1)
        await store.announce(IH, pid(2), a + b"\x00\x02", False, 0, False, max_per_ip=1)
        with pytest.raises(ClientError):
            await store.announce(IH, pid(3), b + b"\x00\x03", False, 0, False, max_per_ip=1)
        clock.t += 100
        await store.announce(IH, pid(2), a + b"\x00\x02", False, 0, False, max_per_ip=1)
        assert await store.sweep(store.now() - 50) == 1  # pid(1) on b timed out
        await store.announce(IH, pid(3), b + b"\x00\x03", False, 0, False, max_per_ip=1)

    async def test_max_per_ip_survives_growth_of_the_swarm(self, store):
        for n in range(300):
            await store.announce(IH, pid(n), v4(n), n % 2 == 0, 0, False, max_per_ip=2)
        same = v4(7)[:4]
        await store.announce(IH, pid(1000), same + b"\x00\x01", False, 0, False, max_per_ip=2)
        with pytest.raises(ClientError):
            await store.announce(IH, pid(1001), same + b"\x00\x02", False, 0, False, max_per_ip=2)
        for n in range(300):
            if n != 7:
                await store.remove(IH, pid(n), v4(n), 0)
        with pytest.raises(ClientError):
            await store.announce(IH, pid(1001), same + b"\x00\x02", False, 0, False, max_per_ip=2)
        await store.remove(IH, pid(7), v4(7), 0)
        await store.announce(IH, pid(1001), same + b"\x00\x02", False, 0, False, max_per_ip=2)

    async def test_create_false_refuses_only_missing_swarms(self, store):
        with pytest.raises(SwarmNotFound):
            await store.announce(IH, pid(1), v4(1), False, 0, False, create=False)
        assert await store.stats() == (0, 0, 0, 0, 0, 0, 0)
        await self.join(store, 1)
        view = await store.announce(IH, pid(2), v4(2), False, 0, False, create=False)
        assert view.incomplete == 2 and view.created is False

    # --- expiry ------------------------------------------------------------------------------

    async def test_sweep_forgets_stale_peers_and_drops_empty_swarms(self, store, clock):
        for n in range(10):
            await self.join(store, n, seeder=n < 3)
        await self.join(store, 1, ih=IH2)
        clock.t += 100
        for n in range(5, 8):
            await self.join(store, n)
        removed = await store.sweep(store.now() - 50)
        assert removed == 8
        assert await store.scrape([IH]) == [(IH, 0, 3, 0)]
        assert await store.stats() == (1, 0, 3, 0, 0, 0, 0)
        assert await store.sweep(store.now() + 1) == 3
        assert await store.stats() == (0, 0, 0, 0, 0, 0, 0)

    async def test_big_swarm_survives_churn(self, store):
        """A model check: random joins, role changes and leaves against a plain dict."""
        rng = random.Random(5)
        model: dict[int, bool] = {}
        for _ in range(6000):
            n = rng.randrange(1500)
            op = rng.random()
            if op < 0.6:
                seeder = rng.random() < 0.3
                await self.join(store, n, seeder=seeder, addr=v6(n) if n % 7 == 0 else v4(n))
                model[n] = seeder
            else:
                await store.remove(IH, pid(n), v6(n) if n % 7 == 0 else v4(n), 0)
                model.pop(n, None)
        seeders = sum(model.values())
        (row,) = await store.scrape([IH])
        assert row[1:3] == (seeders, len(model) - seeders)
        # Every peer is still findable: re-announcing it changes no count.
        for n, seeder in model.items():
            await self.join(store, n, seeder=seeder, addr=v6(n) if n % 7 == 0 else v4(n))
        (row,) = await store.scrape([IH])
        assert row[1:3] == (seeders, len(model) - seeders)
        view = await self.join(store, 99999)
        got = ids_of(view, True, 5000, rng) + ids_of(view, False, 5000, rng)
        assert {number(p) for p in got} == {n for n in model if n % 7}
        # The store-wide counts followed every join, role change and leave, per family.
        s6 = sum(1 for n, seeder in model.items() if seeder and n % 7 == 0)
        l6 = sum(1 for n, seeder in model.items() if not seeder and n % 7 == 0)
        assert await store.stats() == (1, seeders - s6, len(model) - seeders - l6 + 1, s6, l6, 0, 0)

    # --- store-wide stats --------------------------------------------------------------------

    async def test_stats_count_swarms_and_peers_by_family_and_role(self, store):
        assert await store.stats() == (0, 0, 0, 0, 0, 0, 0)
        await self.join(store, 1, seeder=True)
        await self.join(store, 2)
        await self.join(store, 3, addr=v6(3))
        await self.join(store, 4, ih=IH2, seeder=True, addr=v6(4))
        stats = await store.stats()
        assert stats == (2, 1, 1, 1, 1, 0, 0)
        assert (stats.seeders, stats.leechers, stats.peers) == (2, 2, 4)
        await store.remove(IH, pid(2), v4(2), 0)
        await self.join(store, 3, seeder=True, addr=v6(3))  # leecher to seeder
        assert await store.stats() == (2, 1, 0, 2, 0, 0, 0)

    async def test_top_swarms_ranks_by_peers(self, store):
        for n in range(3):
            await self.join(store, n, ih=IH)
        for n in range(5):
            await self.join(store, n, ih=IH2, seeder=n == 0)
        await self.join(store, 1, ih=b"\x33" * 20)
        assert await store.top_swarms(2) == [(IH2, 1, 4, 0), (IH, 0, 3, 0)]
        assert [row[0] for row in await store.top_swarms(10)] == [IH2, IH, b"\x33" * 20]
        assert await store.top_swarms(0) == []
