"""``random``: a uniform random sample of the swarm (the default).

Seeders get only leechers (a seeder has nothing to gain from another seeder). Leechers get seeders
and leechers in proportion to their numbers, so every other peer is equally likely to be sent.
"""

from __future__ import annotations

import random

from johnlocke.store import Pick, SwarmView


class RandomStrategy:
    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        if swarm.seeder:
            return swarm.sample(False, numwant, rng)
        seeders = swarm.count(True)
        leechers = swarm.count(False)
        total = seeders + leechers
        if total <= numwant:
            return swarm.sample(True, seeders, rng) + swarm.sample(False, leechers, rng)
        # Randomised rounding keeps the expected share of seeders exact.
        from_seeders = min(seeders, int(numwant * seeders / total + rng.random()))
        from_leechers = numwant - from_seeders
        if from_leechers > leechers:
            from_leechers = leechers
            from_seeders = numwant - leechers
        return swarm.sample(True, from_seeders, rng) + swarm.sample(False, from_leechers, rng)
