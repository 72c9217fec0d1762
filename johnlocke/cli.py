"""``johnlocke --config tracker.toml``: argument parsing, start-up, signals and shutdown.

The flags that override one configuration key each (``--dir``, ``--port``, ...) are defined in
``johnlocke.flags``; running in the background (``--daemon``) in ``johnlocke.detach``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence

from johnlocke import __version__, compiled, detach, flags, logs
from johnlocke.config import Config, ConfigError, dump, workers_refused
from johnlocke.flags import Settings
from johnlocke.service import Service
from johnlocke.strategy import StrategyLoadError, StrategySet

log = logging.getLogger("johnlocke")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="johnlocke", description="A standalone BitTorrent tracker.")
    p.add_argument(
        "--config",
        default=None,
        metavar="PATH",
        help="the TOML configuration file (default: ./tracker.toml if there is one, else the"
        " built-in defaults)",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print the effective settings and exit",
    )
    p.add_argument(
        "--version", action="version", version=f"johnlocke {__version__}, {compiled.describe()}"
    )
    flags.add_arguments(p)
    run = p.add_argument_group("running without systemd (see examples/johnlocke.service)")
    run.add_argument(
        "--daemon",
        action="store_true",
        help="detach from the terminal and run in the background, once it listens",
    )
    run.add_argument(
        "--pidfile",
        metavar="PATH",
        help="write the process id to PATH, removed at exit; refuse to start if it names a"
        " running process",
    )
    run.add_argument(
        "--logfile",
        metavar="PATH",
        help="append the log to PATH instead of stderr (reopened on SIGHUP, for logrotate)",
    )
    return p


def _fail(exc: Exception, where: str = "") -> int:
    """Every line of an error on stderr, prefixed like the first; exit status 1."""
    for line in str(exc).splitlines():
        print(f"johnlocke: {where}{line}", file=sys.stderr)
    return 1


_KEY = re.compile(r"^\[(\w+)\] (\w+):")


def _origin(settings: Settings, exc: ConfigError) -> str:
    """The prefix for an error about one key found after validation (a missing folder, a bad
    certificate): the flag that set the key, else the file."""
    m = _KEY.match(str(exc))
    return (settings.origin(m[1], m[2]) if m else settings.label) + ": "


def _strategy_origin(settings: Settings, config: Config, exc: StrategyLoadError) -> str:
    where = settings.origin("strategy", "name")
    if where == settings.label or f"strategy {config.strategy.name!r}" not in str(exc):
        return f"{settings.label}: [strategy] "
    if "option" in str(exc) and config.strategy.options:
        return f"{where} (with {settings.label} [strategy] options): [strategy] "
    return f"{where}: [strategy] "


async def _reload(settings: Settings, current: Config, services: list[Service]) -> Config:
    """SIGHUP: re-read the file (the flags still override it); a bad file changes nothing, a
    good one reaches every service."""
    detach.reopen_log()
    try:
        new = settings.load()
    except ConfigError as exc:
        problems = "; ".join(str(exc).splitlines())
        log.error("reload refused, keeping the running configuration: %s", problems)
        return current
    # A new certificate reaches the running TLS context (johnlocke.http.tls); turning TLS on
    # or off changes the listeners.
    tls = {"tls_cert": "", "tls_key": ""} if current.http.tls_cert and new.http.tls_cert else {}
    if new.http.model_copy(update=tls) != current.http.model_copy(update=tls):
        log.warning("[http] changes take effect only after a restart")
    if new.udp != current.udp:
        log.warning("[udp] changes take effect only after a restart")
    if new.stats.page != current.stats.page:
        log.warning("[stats] page changes take effect only after a restart")
    if new.store.model_copy(update={"pool": current.store.pool}) != current.store:
        log.warning("[store] changes (other than pool) take effect only after a restart")
    for service in services:
        try:
            pending = service.reload(new)
            if inspect.isawaitable(pending):
                await pending
        except Exception as exc:
            log.error("reload of %s failed, it keeps its previous settings: %s", service.name, exc)
    log.info("configuration reloaded from %s", settings.label)
    return new


def _summary(
    config: Config, addrs: list[tuple[str, int]], udp_addrs: Sequence[tuple[str, int]] = ()
) -> tuple[str, dict[str, object]]:
    """The start-up line: where it listens and the settings that shape what clients get."""
    from johnlocke.stats import Access

    scheme = "https://" if config.http.tls_cert else ""
    listen = [f"{scheme}[{h}]:{p}" if ":" in h else f"{scheme}{h}:{p}" for h, p in addrs]
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
        "build": compiled.BUILD,
    }
    text = (
        f"johnlocke {__version__} listening on {', '.join(listen)}"
        f"{' and ' + ', '.join(listen_udp) if listen_udp else ''} (strategy"
        f" {config.strategy.name}, mode {mode}, interval {config.announce.interval} s);"
        f" /stats, /metrics and {page} for {who}; access log"
        f" {'on' if config.log.access_log else 'off'}; {compiled.describe()}"
    )
    return text, fields


async def _serve(config: Config, settings: Settings) -> None:
    from johnlocke.access import Access
    from johnlocke.http.server import build_app, listening, start
    from johnlocke.http.tls import Certificate
    from johnlocke.snapshot import SnapshotService
    from johnlocke.stats import StatsService
    from johnlocke.store import Store
    from johnlocke.store.memory import MemoryStore
    from johnlocke.tracker import Tracker
    from johnlocke.udp.server import UdpServer
    from johnlocke.websocket.server import Hub
    from johnlocke.workers import WorkerContext, tag_logs

    worker = WorkerContext.from_env()
    if worker is not None:
        tag_logs(worker.index)
    # Signal handlers first: a SIGTERM that arrives while we bind must still stop us cleanly.
    stop = asyncio.Event()
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    if worker is not None:
        worker.watch_parent(loop, stop)
    memory_store = redis_store = None
    store: Store
    if config.store.backend == "redis":
        from johnlocke.store import redis as redis_driver

        store = redis_store = redis_driver.from_config(config)
    else:
        store = memory_store = MemoryStore()
    # Relative paths in [access] and [state] are relative to the configuration file.
    access = Access(config, store, settings.base)
    tracker = Tracker(config, store, access)
    stats = StatsService(store, config)
    services: list[Service] = [logs.LogService()]
    if memory_store is not None:
        # The snapshot service starts before the tracker (it fills the store before anything
        # else runs) and stops after it (its final snapshot sees the state once everything has
        # stopped). With Redis there is no snapshot: Redis persists (or not) on its own.
        services.append(
            SnapshotService(config, memory_store, settings.base, on_written=stats.snapshot_written)
        )
    elif redis_store is not None:
        from johnlocke.workers import WorkerBoard

        # The store first: it loads its functions (or reports Redis down) before anything uses
        # it. The board (started once we listen, to be named by the port) publishes this
        # process's counters for the others.
        services.append(redis_store)
        stats.sources.append(redis_store)
        board = WorkerBoard(redis_store, stats.stats, "")
        stats.sources.append(board)
    hub = Hub(tracker, config, stats)
    if redis_store is not None:
        from johnlocke.websocket.relay import RedisRelay

        # Browser peers on other workers (and other trackers sharing this Redis) are reached
        # through Redis pub/sub.
        hub.relay = RedisRelay(
            hub, config.store.url, config.store.prefix, hub.gone, config.store.timeout
        )
    services += [access, tracker, stats, hub]
    tls = Certificate(config.http) if config.http.tls_cert else None
    if tls is not None:
        services.append(tls)
    started: list[Service] = []
    runner = None
    udp = None
    try:
        for service in services:
            await service.start()
            started.append(service)
        runner = await start(
            build_app(tracker, config, stats, hub),
            config,
            tls.context if tls is not None else None,
            reuse_port=worker is not None and worker.reuse_port,
            port=worker.port if worker is not None else None,
        )
        if config.udp.enabled:
            udp = UdpServer(
                tracker,
                config,
                stats.stats,
                secret=worker.udp_secret if worker is not None else None,
                reuse_port=worker is not None and worker.reuse_port,
                http_port=worker.port if worker is not None else None,
            )
            await udp.start()
        text, fields = _summary(config, listening(runner), udp.addresses if udp else ())
        log.info("%s", text, extra=fields)
        if redis_store is not None:
            port = listening(runner)[0][1]
            board.worker_id = f"{socket.gethostname()}:{port}/{worker.index if worker else 0}"
            await board.start()
            started.append(board)
        if worker is not None:
            worker.signal_ready()
        else:
            detach.ready()
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(hup.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if hup.is_set() and not stop.is_set():
                hup.clear()
                config = await _reload(settings, config, services)
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


# Options about this process, which worker processes must not repeat (the supervisor is the
# daemon, owns the pid file and the log file).
_PROCESS_OPTIONS = {"--daemon": 0, "--pidfile": 1, "--logfile": 1, "--workers": 1}


def _worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line without the process options: what each worker process is started with."""
    out: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.partition("=")[0]
        if name in _PROCESS_OPTIONS:
            skip = _PROCESS_OPTIONS[name] if "=" not in arg else 0
            continue
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    cwd = os.getcwd()  # workers start here, even after --daemon moved to "/"
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_args(args)
        config = settings.load()
    except ConfigError as exc:
        return _fail(exc)
    logs.setup(config.log)
    try:
        StrategySet(config.strategy)
    except StrategyLoadError as exc:
        return _fail(exc, _strategy_origin(settings, config, exc))
    from johnlocke.workers import WorkerContext

    worker = WorkerContext.from_env()
    count = config.workers.count  # --workers sets it: the flag is validated like the file
    if worker is None:
        refused = workers_refused(config, count)
        if refused:
            return _fail(ValueError(refused), settings.origin("workers", "count") + ": ")
    if args.check_config:
        from johnlocke.access import load_check
        from johnlocke.http.tls import make_context

        try:
            summary = load_check(config, settings.base)
            if config.http.tls_cert:
                make_context(config.http)
                summary += ", HTTPS"
        except ConfigError as exc:
            return _fail(exc, _origin(settings, exc))
        print(f"# {settings.describe()}: OK ({summary}). Effective configuration:")
        if settings.labels:
            print(f"# from the command line: {settings.summary()}")
        print(dump(config, settings.notes))
        return 0
    if config.http.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print(
                f"johnlocke: {settings.origin('http', 'event_loop')}: [http] event_loop: uvloop"
                " is not installed (pip install 'johnlocke[uvloop]')",
                file=sys.stderr,
            )
            return 1
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    # Absolute before --daemon moves to "/".
    pidfile = os.path.abspath(args.pidfile) if args.pidfile else None
    try:
        if pidfile:
            detach.check_pidfile(pidfile)
        if args.daemon:
            detach.detach(args.logfile)
        elif args.logfile:
            detach.use_logfile(args.logfile)
        if pidfile:
            detach.write_pidfile(pidfile)
    except detach.DetachError as exc:
        return _fail(exc)
    try:
        if settings.path is None:
            log.info(
                "no configuration file (no ./%s and no --config): running on the built-in"
                " defaults%s",
                flags.DEFAULT_FILE,
                " and the command-line flags" if settings.labels else "",
            )
        if worker is None and count > 1:
            from johnlocke.workers import supervise

            return supervise(settings, config, count, _worker_argv(argv), cwd)
        with runner:
            runner.run(_serve(config, settings))
    except OSError as exc:
        return _fail(exc)
    except StrategyLoadError as exc:
        return _fail(exc, _strategy_origin(settings, config, exc))
    except ConfigError as exc:  # a file named in [access] or [http] is missing at start-up
        return _fail(exc, _origin(settings, exc))
    finally:
        detach.cleanup()
    return 0
