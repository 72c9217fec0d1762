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

    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        mine = self.network(swarm.addr[:-2])
        width = len(swarm.addr)
        local: list[Pick] = []
        other: list[Pick] = []
        for seeders in (False,) if swarm.seeder else (True, False):
            picks = swarm.sample(seeders, self.pool, rng)
            blob = swarm.compact(picks)
            i = 0
            for t, first, count in picks:
                for s in range(first, first + count):
                    near = self.network(blob[i : i + width - 2]) == mine
                    (local if near else other).append((t, s, 1))
                    i += width
        if len(local) >= numwant:
            return rng.sample(local, numwant)
        need = numwant - len(local)
        return local + (rng.sample(other, need) if len(other) > need else other)
