"""``johnlocke --config tracker.toml``: argument parsing, start-up, signals and shutdown."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from johnlocke import __version__, logs
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


async def _reload(path: str, current: Config, services: list[Service]) -> Config:
    """SIGHUP: re-read the file; a bad file changes nothing, a good one reaches every service."""
    try:
        new = load(path)
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return current
    if new.http != current.http:
        log.warning("[http] changes take effect only after a restart")
    if new.udp != current.udp:
        log.warning("[udp] changes take effect only after a restart")
    if new.stats.page != current.stats.page:
        log.warning("[stats] page changes take effect only after a restart")
    for service in services:
        try:
            pending = service.reload(new)
            if inspect.isawaitable(pending):
                await pending
        except Exception as exc:
            log.error("reload of %s failed, it keeps its previous settings: %s", service.name, exc)
    log.info("configuration reloaded from %s", path)
    return new


def _summary(
    config: Config, addrs: list[tuple[str, int]], udp_addrs: Sequence[tuple[str, int]] = ()
) -> tuple[str, dict[str, object]]:
    """The start-up line: where it listens and the settings that shape what clients get."""
    from johnlocke.stats import Access

    listen = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addrs]
    listen_udp = [f"udp://[{h}]:{p}" if ":" in h else f"udp://{h}:{p}" for h, p in udp_addrs]
    access = getattr(config, "access", None)
    mode = getattr(access, "mode", "open")
    s = config.stats
    who = Access(config).describe()
    page = f"page {s.page}" if s.page else "no page"
    fields: dict[str, object] = {
        "listen": listen,
        "listen_udp": listen_udp,
        "mode": mode,
        "strategy": config.strategy.name,
        "interval": config.announce.interval,
        "stats_allow": who,
        "status_page": s.page or None,
        "log_format": config.log.format,
        "access_log": config.log.access_log,
    }
    text = (
        f"johnlocke {__version__} listening on {', '.join(listen)}"
        f"{' and ' + ', '.join(listen_udp) if listen_udp else ''} (strategy"
        f" {config.strategy.name}, mode {mode}, interval {config.announce.interval} s);"
        f" /stats, /metrics and {page} for {who}; access log"
        f" {'on' if config.log.access_log else 'off'}"
    )
    return text, fields


async def _serve(config: Config, path: str, verbose: bool = False) -> None:
    from johnlocke.access import Access
    from johnlocke.http.server import build_app, listening, start
    from johnlocke.snapshot import SnapshotService
    from johnlocke.stats import StatsService
    from johnlocke.store.memory import MemoryStore
    from johnlocke.tracker import Tracker
    from johnlocke.udp.server import UdpServer

    # Signal handlers first: a SIGTERM that arrives while we bind must still stop us cleanly.
    stop = asyncio.Event()
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    store = MemoryStore()
    # Relative paths in [access] and [state] are relative to the configuration file.
    access = Access(config, store, Path(path).resolve().parent)
    tracker = Tracker(config, store, access)
    stats = StatsService(store, config)
    # The snapshot service starts before the tracker (it fills the store before anything else
    # runs) and stops after it (its final snapshot sees the state once everything has stopped).
    snapshots = SnapshotService(
        config, store, Path(path).resolve().parent, on_written=stats.snapshot_written
    )
    services: list[Service] = [logs.LogService(verbose), snapshots, access, tracker, stats]
    started: list[Service] = []
    runner = None
    udp = None
    try:
        for service in services:
            await service.start()
            started.append(service)
        runner = await start(build_app(tracker, config, stats), config)
        if config.udp.enabled:
            udp = UdpServer(tracker, config, stats.stats)
            await udp.start()
        text, fields = _summary(config, listening(runner), udp.addresses if udp else ())
        log.info("%s", text, extra=fields)
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(hup.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if hup.is_set() and not stop.is_set():
                hup.clear()
                config = await _reload(path, config, services)
        log.info("shutting down: closing listeners, finishing requests in flight")
    finally:
        # cleanup() stops accepting and waits up to shutdown_timeout for requests in flight;
        # only then do the services stop, so they see the final state.
        if udp is not None:
            await udp.stop(config.http.shutdown_timeout)
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
    logs.setup(config.log, args.verbose)
    try:
        StrategySet(config.strategy)
    except StrategyLoadError as exc:
        print(f"johnlocke: {args.config}: [strategy] {exc}", file=sys.stderr)
        return 1
    if args.check_config:
        from johnlocke.access import load_check

        try:
            summary = load_check(config, Path(args.config).resolve().parent)
        except ConfigError as exc:
            print(f"johnlocke: {args.config}: {exc}", file=sys.stderr)
            return 1
        print(f"# {args.config}: OK ({summary}). Effective configuration:")
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
            runner.run(_serve(config, args.config, args.verbose))
    except OSError as exc:
        print(f"johnlocke: {exc}", file=sys.stderr)
        return 1
    except StrategyLoadError as exc:
        print(f"johnlocke: {args.config}: [strategy] {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # a file named in [access] is missing at start-up
        print(f"johnlocke: {args.config}: {exc}", file=sys.stderr)
        return 1
    return 0
