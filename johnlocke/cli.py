"""``johnlocke --config tracker.toml``: argument parsing, start-up, signals and shutdown."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from johnlocke import __version__
from johnlocke.config import Config, ConfigError, dump, load
from johnlocke.service import Service
from johnlocke.strategy import StrategyLoadError, StrategySet

log = logging.getLogger("johnlocke")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="johnlocke", description="A standalone BitTorrent tracker.")
    p.add_argument(
        "--config",
        default="tracker.toml",
        metavar="PATH",
        help="the TOML configuration file (default: ./tracker.toml)",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print the effective settings and exit",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    p.add_argument("--version", action="version", version=f"johnlocke {__version__}")
    return p


def _reload(path: str, current: Config, services: list[Service]) -> Config:
    """SIGHUP: re-read the file; a bad file changes nothing, a good one reaches every service."""
    try:
        new = load(path)
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return current
    if new.http != current.http:
        log.warning("[http] changes take effect only after a restart")
    for service in services:
        try:
            service.reload(new)
        except Exception as exc:
            log.error("reload of %s failed, it keeps its previous settings: %s", service.name, exc)
    log.info("configuration reloaded from %s", path)
    return new


async def _serve(config: Config, path: str) -> None:
    from johnlocke.http import build_app, listening, start
    from johnlocke.snapshot import SnapshotService
    from johnlocke.store.memory import MemoryStore
    from johnlocke.tracker import Tracker

    # Signal handlers first: a SIGTERM that arrives while we bind must still stop us cleanly.
    stop = asyncio.Event()
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    store = MemoryStore()
    tracker = Tracker(config, store)
    # The snapshot service starts first (it fills the store before anything else runs) and stops
    # last (its final snapshot sees the state once everything else has stopped).
    snapshots = SnapshotService(config, store, Path(path).resolve().parent)
    services: list[Service] = [snapshots, tracker]
    started: list[Service] = []
    runner = None
    try:
        for service in services:
            await service.start()
            started.append(service)
        runner = await start(build_app(tracker, config), config)
        addrs = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in listening(runner))
        log.info(
            "johnlocke %s listening on %s (strategy %s)", __version__, addrs, config.strategy.name
        )
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(hup.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if hup.is_set() and not stop.is_set():
                hup.clear()
                config = _reload(path, config, services)
        log.info("shutting down: closing listeners, finishing requests in flight")
    finally:
        # cleanup() stops accepting and waits up to shutdown_timeout for requests in flight;
        # only then do the services stop, so they see the final state.
        if runner is not None:
            await runner.cleanup()
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        await tracker.store.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"johnlocke: {exc}", file=sys.stderr)
        return 1
    level = "debug" if args.verbose else config.log.level
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        StrategySet(config.strategy)
    except StrategyLoadError as exc:
        print(f"johnlocke: {args.config}: [strategy] {exc}", file=sys.stderr)
        return 1
    if args.check_config:
        print(f"# {args.config}: OK. Effective configuration:")
        print(dump(config))
        return 0
    if config.http.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print(
                f"johnlocke: {args.config}: [http] event_loop: uvloop is not installed"
                " (pip install 'johnlocke[uvloop]')",
                file=sys.stderr,
            )
            return 1
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(_serve(config, args.config))
    except OSError as exc:
        print(f"johnlocke: {exc}", file=sys.stderr)
        return 1
    except StrategyLoadError as exc:
        print(f"johnlocke: {args.config}: [strategy] {exc}", file=sys.stderr)
        return 1
    return 0
