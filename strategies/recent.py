"""``recent``: the most recently seen peers first.

For: swarms with many stale or flaky peers (mobile clients, NATs that time out): peers that
announced a moment ago are the likeliest to accept a connection. This is what many trackers do.
Ranks a bounded random pool of ``pool`` peers per role (exact for swarms smaller than that).
Seeders get leechers only.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

from johnlocke.store import Pick, SwarmView
from johnlocke.strategy import single


class RecentOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: int = Field(default=200, ge=1, le=5000)


class RecentStrategy:
    Options = RecentOptions

    def __init__(self, options: RecentOptions) -> None:
        self.pool = options.pool

    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        runs: list[Pick] = []
        for seeders in (False,) if swarm.seeder else (True, False):
            runs += swarm.sample(seeders, self.pool, rng)
        seen = swarm.last_seen(runs)  # one value per peer, in the order single() lists them
        picks = single(runs)
        order = sorted(range(len(picks)), key=seen.__getitem__, reverse=True)
        return [picks[i] for i in order[:numwant]]
