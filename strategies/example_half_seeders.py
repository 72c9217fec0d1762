"""Example plugin: leechers get a fixed share of seeders (``seed_share``), the rest leechers."""

import random

from pydantic import BaseModel, Field

from johnlocke.store import Pick, SwarmView


class HalfSeeders:
    class Options(BaseModel):
        seed_share: float = Field(default=0.5, ge=0, le=1)

    def __init__(self, options: Options) -> None:
        self.share = options.seed_share

    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        if swarm.seeder:  # seeders only need leechers
            return swarm.sample(False, numwant, rng)
        picks = swarm.sample(True, round(numwant * self.share), rng)
        got = sum(count for _, _, count in picks)
        return picks + swarm.sample(False, numwant - got, rng)
