"""``small-group``: in a small swarm everybody gets everybody, and announces come quickly.

For: private distribution groups (a family sharing photos, a team sharing builds). In a swarm of
at most ``max_peers`` peers, every peer is sent every other peer (seeders included, so a group
that reshuffles who seeds still finds itself) and is asked to come back after ``interval``
seconds, so a new member is found within a minute instead of half an hour. Larger swarms are
answered like ``random``, with the configured interval.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

from johnlocke.store import Pick, SwarmView
from johnlocke.strategy import uniform


class SmallGroupOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_peers: int = Field(default=50, ge=1, le=1000)
    interval: int = Field(default=60, ge=1)


class SmallGroupStrategy:
    Options = SmallGroupOptions

    def __init__(self, options: SmallGroupOptions) -> None:
        self.max_peers = options.max_peers
        self.short_interval = options.interval

    def small(self, swarm: SwarmView) -> bool:
        return swarm.complete + swarm.incomplete <= self.max_peers

    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        if not self.small(swarm):
            return uniform(swarm, numwant, rng)
        seeders = swarm.window(True, 0, numwant)
        got = sum(count for _, _, count in seeders)
        return seeders + swarm.window(False, 0, numwant - got)

    def interval(self, swarm: SwarmView) -> int | None:
        return self.short_interval if self.small(swarm) else None
