"""Peer selection: the strategy interface, and the one function that finds a strategy by name.

Theory of operation
-------------------
A strategy decides which peers an announcing peer receives ("shape the swarm"). It is a plain
class with a ``select`` method, synchronous and without I/O, that works through the
``SwarmView`` it is given (see ``johnlocke.store``). Every view operation is bounded by what it
returns, so no strategy can make one announce cost O(swarm size). It answers with ``Pick``
values taken from the view, which the tracker turns into the bencoded peer list.

Options: a strategy declares them as a pydantic model in its ``Options`` attribute; the config's
``[strategy] options`` table is validated against it at start-up and the validated model is
passed to the constructor. A strategy without ``Options`` takes no options.

Load-shaping: a strategy may also define ``interval(swarm) -> int | None``, the number of seconds
the announcing client should wait; ``None`` keeps the configured interval.

Names resolve the way Python users expect from uvicorn or pytest, in this order:

1. a name registered under the ``johnlocke.strategies`` entry-point group (the built-ins are
   registered there by JohnLocke's own package, exactly as a third-party package would);
2. a ``NAME.py`` file in one of the ``[strategy] paths`` folders (the class is the one named after
   a colon, ``"file:Class"``, or else the module's only class with a ``select`` method);
3. ``module:Class`` for any importable module (the ``paths`` folders are importable too).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import random
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from johnlocke.config import StrategyConfig
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


def _entry_point(name: str) -> Any | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as exc:
                raise StrategyLoadError(
                    f"strategy {name!r}: cannot load {ep.value}: {exc}"
                ) from exc
    return None


def _from_file(name: str, path: Path) -> Any:
    stem, _, attr = name.partition(":")
    module_name = f"johnlocke_plugin_{stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise StrategyLoadError(f"strategy {name!r}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise StrategyLoadError(f"strategy {name!r}: error in {path}: {exc!r}") from exc
    if attr:
        try:
            return getattr(module, attr)
        except AttributeError:
            raise StrategyLoadError(f"strategy {name!r}: {path} has no {attr!r}") from None
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and obj.__module__ == module_name and hasattr(obj, "select")
    ]
    if len(found) != 1:
        raise StrategyLoadError(
            f"strategy {name!r}: {path} must define exactly one class with a select() method"
            f" (found {len(found)}); name the class as {stem}:ClassName"
        )
    return found[0]


def _from_module(name: str) -> Any:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise StrategyLoadError(f"strategy {name!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise StrategyLoadError(
            f"strategy {name!r}: module {module_name!r} has no attribute {attr!r}"
        ) from None


def known_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def find_class(name: str, paths: Sequence[Path | str] = ()) -> Any:
    """The strategy class a name stands for (see the module docstring for the order)."""
    if not name.strip():
        raise StrategyLoadError("strategy name is empty")
    if ":" not in name:
        cls = _entry_point(name)
        if cls is not None:
            return cls
    stem = name.partition(":")[0]
    paths = [Path(p) for p in paths]
    for folder in paths:
        candidate = folder / f"{stem}.py"
        if candidate.is_file():
            return _from_file(name, candidate)
    if ":" in name:
        for folder in paths:
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
        return _from_module(name)
    where = f"; no {stem}.py in {', '.join(str(p) for p in paths)}" if paths else ""
    raise StrategyLoadError(
        f"strategy {name!r}: no such strategy (built-in: {', '.join(known_names()) or 'none'}"
        f"{where}; or give module:Class)"
    )


def resolve(
    name: str, options: dict[str, Any] | None = None, paths: Sequence[Path | str] = ()
) -> Strategy:
    """Find a strategy by name, validate its options and instantiate it.

    Every failure is a ``StrategyLoadError`` whose message names the strategy and the cause.
    """
    cls = find_class(name, paths)
    if not inspect.isclass(cls) or not callable(getattr(cls, "select", None)):
        raise StrategyLoadError(f"strategy {name!r}: {cls!r} is not a class with a select() method")
    model = getattr(cls, "Options", None)
    try:
        if model is None:
            if options:
                raise StrategyLoadError(
                    f"strategy {name!r} takes no options (got {', '.join(sorted(options))})"
                )
            strategy = cls()
        else:
            if not (inspect.isclass(model) and issubclass(model, BaseModel)):
                raise StrategyLoadError(f"strategy {name!r}: Options must be a pydantic model")
            strategy = cls(model.model_validate(options or {}))
    except StrategyLoadError:
        raise
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        raise StrategyLoadError(f"strategy {name!r}: bad option {where}: {msg}") from None
    except Exception as exc:
        raise StrategyLoadError(f"strategy {name!r}: failed to start: {exc!r}") from exc
    return strategy


def interval_hook(strategy: Strategy) -> Any | None:
    """The strategy's optional ``interval(swarm)`` method, or None."""
    hook = getattr(strategy, "interval", None)
    return hook if callable(hook) else None


class Chosen:
    """A loaded strategy with what the tracker needs to call it quickly."""

    __slots__ = ("name", "strategy", "interval")

    def __init__(self, name: str, strategy: Strategy) -> None:
        self.name = name
        self.strategy = strategy
        self.interval = interval_hook(strategy)


class StrategySet:
    """The default strategy and the per-swarm rules of ``[strategy]``, all loaded up front.

    Rules are tried in order and the first that matches a swarm wins: a rule matches when the
    swarm's info_hash is in its list (if it has one) and the swarm's size is within its bounds.
    With no rules the default is used without looking at anything.
    """

    def __init__(self, config: StrategyConfig) -> None:
        paths = list(config.paths)
        self.default = Chosen(config.name, resolve(config.name, config.options, paths))
        self.rules: list[tuple[frozenset[bytes] | None, int, float, Chosen]] = []
        for i, rule in enumerate(config.rules):
            try:
                chosen = Chosen(rule.name, resolve(rule.name, rule.options, paths))
            except StrategyLoadError as exc:
                raise StrategyLoadError(f"rules[{i}]: {exc}") from None
            hashes = frozenset(bytes.fromhex(h) for h in rule.info_hashes) or None
            low = rule.min_peers or 0
            high = float("inf") if rule.max_peers is None else rule.max_peers
            self.rules.append((hashes, low, high, chosen))

    def choose(self, swarm: SwarmView) -> Chosen:
        if self.rules:
            size = swarm.complete + swarm.incomplete
            for hashes, low, high, chosen in self.rules:
                if (hashes is None or swarm.info_hash in hashes) and low <= size <= high:
                    return chosen
        return self.default


def uniform(swarm: SwarmView, numwant: int, rng: random.Random) -> list[Pick]:
    """A uniform random sample of what the announcer may get: leechers only for a seeder, else
    seeders and leechers in proportion to their numbers. The ``random`` strategy, and a
    building block for strategies that fill up "at random"."""
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


def picked(picks: list[Pick]) -> int:
    """How many peers some picks stand for."""
    return sum(count for _, _, count in picks)


def single(picks: list[Pick]) -> list[Pick]:
    """Picks split into one pick per peer (for strategies that rank or filter peers)."""
    return [(t, s, 1) for t, first, count in picks for s in range(first, first + count)]
