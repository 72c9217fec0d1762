"""``locality``: peers in the announcer's own network first, then others at random.

For: ISPs, campuses and companies that want traffic to stay inside a network ("same subnet"
preference). A peer is local when it is in the same operator-listed CIDR group as the announcer
(``groups``), or else in the same /prefix_v4 (IPv4) or /prefix_v6 (IPv6) network.

It looks at a bounded random pool of ``pool`` peers per role, so on a huge swarm a local peer
outside the pool is not found on this announce (but may be on the next).
"""

from __future__ import annotations

import random
from ipaddress import IPv4Network, IPv6Network

from pydantic import BaseModel, ConfigDict, Field

from johnlocke.store import Pick, SwarmView
from johnlocke.strategy import single


class LocalityOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix_v4: int = Field(default=24, ge=0, le=32)
    prefix_v6: int = Field(default=48, ge=0, le=128)
    groups: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    pool: int = Field(default=200, ge=1, le=5000)


class LocalityStrategy:
    Options = LocalityOptions

    def __init__(self, options: LocalityOptions) -> None:
        self.pool = options.pool
        self.prefix = {4: options.prefix_v4, 16: options.prefix_v6}
        self.masks = {
            4: ((1 << 32) - 1) ^ ((1 << (32 - options.prefix_v4)) - 1),
            16: ((1 << 128) - 1) ^ ((1 << (128 - options.prefix_v6)) - 1),
        }
        self.groups = [
            (net.max_prefixlen // 8, int(net.network_address), int(net.netmask))
            for net in options.groups
        ]

    def network(self, ip: bytes) -> int:
        """A number naming the peer's network: -(n+1) for operator group n, else its prefix."""
        value = int.from_bytes(ip, "big")
        for n, (size, net, mask) in enumerate(self.groups):
            if size == len(ip) and value & mask == net:
                return -(n + 1)
        return value & self.masks[len(ip)]

    def local_indices(self, blob: bytes, ip: bytes, width: int) -> list[int]:
        """Which addresses in a compact blob are in the announcer's network."""
        bits = self.prefix[len(ip)]
        if not self.groups and bits % 8 == 0:
            # Byte-aligned prefix: let bytes.find scan in C and look only at the hits.
            head = ip[: bits // 8]
            out = []
            i = blob.find(head)
            while i >= 0:
                if i % width == 0:
                    out.append(i // width)
                    i += width
                else:
                    i += 1
                i = blob.find(head, i)
            return out
        mine = self.network(ip)
        n = width - 2
        return [
            i // width for i in range(0, len(blob), width) if self.network(blob[i : i + n]) == mine
        ]

    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        ip = swarm.addr[:-2]
        width = len(swarm.addr)
        local: list[Pick] = []
        pools: list[tuple[list[Pick], set[int]]] = []
        for seeders in (False,) if swarm.seeder else (True, False):
            runs = swarm.sample(seeders, self.pool, rng)
            near = self.local_indices(swarm.compact(runs), ip, width)
            picks = single(runs)  # same order as the compact blob
            local += [picks[i] for i in near]
            pools.append((picks, set(near)))
        if len(local) >= numwant:
            return rng.sample(local, numwant)
        # Fill up from the rest of the (already random) pool.
        need = numwant - len(local)
        for picks, near in pools:
            for i, pick in enumerate(picks):
                if need == 0:
                    return local
                if i not in near:
                    local.append(pick)
                    need -= 1
        return local
