"""``spread``: share the seeders out evenly, round-robin, instead of at random.

For: swarms with few seeders and many leechers (a new release). A random tracker sends some
seeders to many more leechers than others, and the first seeder to arrive is sent to everyone
who comes early. ``spread`` uses the tracker's own memory of what it handed out: each swarm keeps a
cursor over its seeders, and every leecher gets the seeders that were handed out least recently
(the least connected), so load spreads across all seeds. Leechers also get other leechers at
random; seeders get leechers at random.

State: one integer per swarm, up to ``max_swarms`` swarms (then it starts afresh).
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

from johnlocke.store import Pick, SwarmView


class SpreadOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed_share: float = Field(default=0.5, gt=0, le=1)
    max_swarms: int = Field(default=100_000, ge=1)


class SpreadStrategy:
    Options = SpreadOptions

    def __init__(self, options: SpreadOptions) -> None:
        self.seed_share = options.seed_share
        self.max_swarms = options.max_swarms
        self.cursors: dict[bytes, int] = {}

    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        if swarm.seeder:
            return swarm.sample(False, numwant, rng)
        seeders = swarm.count(True)
        leechers = swarm.count(False)
        want_seeders = min(seeders, max(1, round(numwant * self.seed_share)), numwant)
        want_seeders = max(want_seeders, numwant - leechers)  # fill with seeders if few leechers
        cursor = self.cursors.get(swarm.info_hash, 0)
        picks = swarm.window(True, cursor, want_seeders)
        if seeders:
            if len(self.cursors) >= self.max_swarms and swarm.info_hash not in self.cursors:
                self.cursors.clear()
            self.cursors[swarm.info_hash] = (cursor + want_seeders) % seeders
        got = sum(count for _, _, count in picks)
        return picks + swarm.sample(False, numwant - got, rng)
