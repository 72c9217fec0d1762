"""``random`` (the default): a uniform random sample of the swarm.

For: any tracker. Every other peer is equally likely to be sent. Seeders get only leechers (a
seeder has nothing to gain from another seeder); leechers get seeders and leechers in proportion
to their numbers. Costs O(numwant / 8) slices per announce, whatever the swarm's size.
"""

from __future__ import annotations

import random

from johnlocke.store import Pick, SwarmView
from johnlocke.strategy import uniform


class RandomStrategy:
    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        return uniform(swarm, numwant, rng)
