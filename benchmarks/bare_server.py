"""The ceiling: a bare aiohttp server that answers /announce and /scrape with a fixed body.

It is set up like JohnLocke's frontend (``johnlocke.http.server``): a ``web.Application`` with the
same two GET routes, an ``AppRunner`` without access log and with the same keep-alive timeout, the
same ``web.Response(body=..., content_type="text/plain")``, and the same event-loop choice. What it
skips is the tracker: no query parsing, no swarm, no peer selection, no encoding. The announce body
is a realistic one (50 compact peers, like JohnLocke's answer to the benchmark) so both send the
same number of bytes.

    python benchmarks/bare_server.py --port 8000 [--loop uvloop] [--scrape-hash HEX]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from aiohttp import web


def announce_body() -> bytes:
    peers = b"".join(b"\x7f\x00\x00\x01" + (10000 + i).to_bytes(2, "big") for i in range(50))
    return (
        b"d8:completei25e10:downloadedi0e11:external ip4:\x7f\x00\x00\x01"
        b"10:incompletei75e8:intervali1800e12:min intervali900e5:peers%d:%s6:peers60:"
        b"10:tracker id8:%se" % (len(peers), peers, os.urandom(4).hex().encode())
    )


def scrape_body(info_hash: bytes) -> bytes:
    return b"d5:filesd20:%sd8:completei25e10:downloadedi0e10:incompletei75eeee" % info_hash


async def serve(port: int, info_hash: bytes) -> None:
    announce = announce_body()
    scrape = scrape_body(info_hash)

    async def on_announce(request: web.BaseRequest) -> web.Response:
        return web.Response(body=announce, content_type="text/plain")

    async def on_scrape(request: web.BaseRequest) -> web.Response:
        return web.Response(body=scrape, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/announce", on_announce)
    app.router.add_get("/scrape", on_scrape)
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=5.0, keepalive_timeout=15.0, max_line_size=16384
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare aiohttp listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--scrape-hash", default="00" * 20, help="info_hash (hex) in the scrape body")
    args = p.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.port, bytes.fromhex(args.scrape_hash)))


if __name__ == "__main__":
    main()
