"""``opposite-role``: leechers get seeders first, then leechers; seeders get leechers only.

For: swarms where seeders are scarce or a fresh torrent must spread fast: every leecher is sure
to learn about as many seeders as it asked for before any other leecher.
"""

from __future__ import annotations

import random

from johnlocke.store import Pick, SwarmView
from johnlocke.strategy import picked


class OppositeRoleStrategy:
    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        if swarm.seeder:
            return swarm.sample(False, numwant, rng)
        picks = swarm.sample(True, numwant, rng)
        rest = numwant - picked(picks)
        return picks + swarm.sample(False, rest, rng) if rest > 0 else picks
