"""Peer selection: the strategy interface and the one function that finds a strategy by name.

A strategy decides which peers an announcing peer receives. It is synchronous, does no I/O and
works through the ``SwarmView`` it is given, whose operations are O(numwant), so no strategy can
make one announce cost O(swarm size).

Names resolve the way Python users expect from uvicorn or pytest: a short name registered under
the ``johnlocke.strategies`` entry-point group (the built-ins are registered there by JohnLocke's
own package, exactly as a third-party plugin would be), or ``module:Class``.
"""

from __future__ import annotations

import importlib
import random
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from johnlocke.store import Pick, SwarmView

ENTRY_POINT_GROUP = "johnlocke.strategies"


@runtime_checkable
class Strategy(Protocol):
    """Chooses the peers one announce receives."""

    def select(self, swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
        """Return the peers to send, at most ``numwant``, as picks obtained from ``swarm``.

        ``rng`` is the only source of randomness a strategy should use, so tests can seed it.
        """
        ...


class StrategyLoadError(Exception):
    """A strategy that cannot be used; the message names it and says why."""


def resolve(name: str, options: dict[str, Any] | None = None) -> Strategy:
    """Find a strategy by built-in/registered name or ``module:Class`` and instantiate it."""
    options = options or {}
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise StrategyLoadError(
                f"strategy {name!r}: cannot import {module_name!r}: {exc}"
            ) from exc
        try:
            cls = getattr(module, attr)
        except AttributeError:
            raise StrategyLoadError(
                f"strategy {name!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
            raise StrategyLoadError(
                f"strategy {name!r}: no such strategy (known: {', '.join(known) or 'none'};"
                " or give module:Class)"
            )
        try:
            cls = found[0].load()
        except Exception as exc:
            raise StrategyLoadError(f"strategy {name!r}: cannot load: {exc}") from exc
    try:
        strategy = cls(**options)
    except Exception as exc:
        raise StrategyLoadError(f"strategy {name!r}: bad options: {exc}") from exc
    if not isinstance(strategy, Strategy):
        raise StrategyLoadError(f"strategy {name!r}: {cls!r} has no select(swarm, numwant, rng)")
    return strategy
