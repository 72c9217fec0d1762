"""The status page: one self-contained HTML document with server-drawn SVG plots.

No script, stylesheet, font or image is fetched from anywhere (the tracker may run offline):
the style is inline and the plots are SVG paths computed here from the ``StatsService``
history. The page reloads itself with a meta refresh. Everything that came from a client
(failure reasons, peer_id prefixes) is HTML-escaped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from johnlocke.stats import Sample

WIDTH, HEIGHT = 560, 190
LEFT, RIGHT, TOP, BOTTOM = 56, 14, 12, 24
HOUR = 3600.0
MIN_SPAN = 60.0

_CSS = """
:root { color-scheme: light; --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f6f7f9; }
header { background: #111827; color: #f9fafb; padding: 14px 24px; display: flex;
         align-items: baseline; gap: 16px; flex-wrap: wrap; }
header h1 { font-size: 20px; margin: 0; font-weight: 600; }
header .meta { color: #9ca3af; font-size: 13px; }
main { padding: 18px 24px 32px; max-width: 1240px; margin: 0 auto; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.tile .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.tile .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px;
         margin-top: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card h2 { font-size: 15px; margin: 0 0 6px; font-weight: 600; }
.legend { color: var(--muted); font-size: 12px; margin-left: 8px; font-weight: 400; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
          margin: 0 4px 0 10px; vertical-align: -1px; }
svg.plot { width: 100%; height: auto; display: block; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .axis { fill: var(--muted); font-size: 11px; }
svg .line { fill: none; stroke-width: 2; stroke-linejoin: round; stroke-linecap: round; }
.tables { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px;
          margin-top: 16px; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 500; font-size: 12px; }
td.n, th.n { text-align: right; }
code { font-size: 12px; }
.empty { color: var(--muted); font-style: italic; }
footer { color: var(--muted); font-size: 12px; margin-top: 18px; }
footer a { color: inherit; }
"""

COLORS = {
    "peers": "#2563eb",
    "ipv6": "#93c5fd",
    "seeders": "#16a34a",
    "leechers": "#ea580c",
    "announces": "#7c3aed",
    "scrapes": "#0891b2",
    "rss": "#475569",
}


def render(
    report: dict[str, Any],
    history: Sequence[Sample],
    live: Sample,
    refresh: int = 10,
    token: str | None = None,
) -> str:
    """The page for a ``StatsService.report()``, its history and the current point."""
    points = [s for s in history if s.time < live.time] + [live]
    end = live.time
    points = [s for s in points if s.time >= end - HOUR]
    span = min(HOUR, max(MIN_SPAN, end - points[0].time))
    times = [s.time for s in points]

    def plot(pid: str, title: str, series: list[tuple[str, list[float]]], fmt: Fmt) -> str:
        return _card(pid, title, series, times, end, span, fmt)

    plots = [
        plot(
            "peers",
            "Peers",
            [("peers", [s.peers for s in points]), ("ipv6", [s.peers_ipv6 for s in points])],
            _count,
        ),
        plot(
            "roles",
            "Seeders and leechers",
            [("seeders", [s.seeders for s in points]), ("leechers", [s.leechers for s in points])],
            _count,
        ),
        plot(
            "rates",
            "Requests per second",
            [
                ("announces", [s.announces_per_second for s in points]),
                ("scrapes", [s.scrapes_per_second for s in points]),
            ],
            _rate,
        ),
        plot("memory", "Memory (RSS)", [("rss", [s.rss / 2**20 for s in points])], _mib),
    ]
    r = report
    tiles = [
        ("swarms", "Swarms", _count(r["swarms"])),
        ("peers", "Peers", _count(r["peers"])),
        ("seeders", "Seeders", _count(r["seeders"])),
        ("leechers", "Leechers", _count(r["leechers"])),
        ("ipv4", "IPv4 peers", _count(r["ipv4"]["peers"])),
        ("ipv6", "IPv6 peers", _count(r["ipv6"]["peers"])),
        ("announce-rate", "Announces/s", _rate(r["announces"]["per_second_10s"])),
        ("scrape-rate", "Scrapes/s", _rate(r["scrapes"]["per_second_10s"])),
        ("announces", "Announces", _count(r["announces"]["total"])),
        ("failures", "Failures", _count(r["failures"]["total"])),
        ("rss", "Memory", _bytes(r["rss_bytes"])),
        ("uptime", "Uptime", _duration(r["uptime_seconds"])),
    ]
    if r["snapshot_age_seconds"] is not None:
        tiles.append(("snapshot", "Last snapshot", _duration(r["snapshot_age_seconds"]) + " ago"))
    suffix = f"?token={quote(token)}" if token else ""
    updated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r["time"]))
    return "".join(
        [
            "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>",
            f'<meta http-equiv="refresh" content="{int(refresh)}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>JohnLocke tracker status</title>",
            f"<style>{_CSS}</style></head><body>",
            "<header><h1>JohnLocke tracker</h1>",
            f'<span class="meta">version {escape(r["version"])}'
            f" ({escape(r.get('build', '?'))}) · up "
            f"{_duration(r['uptime_seconds'])} · updated {updated} · refreshes every "
            f"{int(refresh)} s</span></header><main>",
            '<section class="tiles">',
            *(
                f'<div class="tile"><div class="label">{label}</div>'
                f'<div class="value" id="{tid}">{value}</div></div>'
                for tid, label, value in tiles
            ),
            "</section>",
            '<section class="plots">',
            *plots,
            "</section>",
            '<section class="tables">',
            _top_swarms(r["top_swarms"]),
            _clients(r["clients"]),
            _failures(r["failures"]["by_reason"]),
            _latency(r["latency_ms"], r["announces"]["by_event"]),
            _transports(r["transports"]),
            "</section>",
            f'<footer>Machine-readable: <a href="/stats{suffix}">/stats</a> (JSON) · '
            f'<a href="/metrics{suffix}">/metrics</a> (Prometheus). Plots cover up to the '
            "last hour.</footer>",
            "</main></body></html>\n",
        ]
    )


Fmt = Callable[[float], str]


def _count(v: float) -> str:
    return f"{int(v):,}"


def _rate(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _mib(v: float) -> str:
    return f"{v:,.4g} MiB"


def _bytes(v: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} GiB"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _nice_max(v: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k that is >= v / 4, times 4 (four gridlines)."""
    if v <= 0:
        return 4.0 if v == 0 else 1.0
    step = v / 4
    mag = 10 ** math.floor(math.log10(step))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= step:
            return 4 * m * mag
    return 4 * 10 * mag


def _card(
    pid: str,
    title: str,
    series: list[tuple[str, list[float]]],
    times: list[float],
    end: float,
    span: float,
    fmt: Fmt,
) -> str:
    top = max((max(vals) for _, vals in series if vals), default=0.0)
    ymax = _nice_max(top)
    if fmt is _count and ymax < 4:
        ymax = 4.0  # whole numbers: no gridline at 0.5 peers
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + pw * (1 - (end - t) / span)

    def y(v: float) -> float:
        return TOP + ph * (1 - v / ymax)

    parts = [
        f'<svg class="plot" id="plot-{pid}" data-max="{ymax:g}" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-label="{escape(title)} over the last {_duration(span)}">'
    ]
    for i in range(5):
        v = ymax * i / 4
        yy = y(v)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
        )
        tick = _mib(v) if fmt is _mib else f"{v:,.4g}"
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    for i in range(5):
        ago = span * (4 - i) / 4
        label = "now" if i == 4 else (f"-{ago / 60:.0f} min" if span >= 240 else f"-{ago:.0f} s")
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        parts.append(
            f'<text class="axis" x="{LEFT + pw * i / 4:.1f}" y="{HEIGHT - 6}"'
            f' text-anchor="{anchor}">{label}</text>'
        )
    legend = []
    for name, vals in series:
        color = COLORS[name]
        pts = [f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, vals, strict=True)]
        last = vals[-1] if vals else 0
        parts.append(
            f'<path class="line" data-series="{name}" data-points="{len(pts)}"'
            f' data-last="{last:g}" stroke="{color}" d="M{" L".join(pts)}"/>'
        )
        if pts:
            cx, cy = pts[-1].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>')
        legend.append(f'<span class="swatch" style="background:{color}"></span>{name} {fmt(last)}')
    parts.append("</svg>")
    return (
        f'<div class="card"><h2>{escape(title)}<span class="legend">{"".join(legend)}</span></h2>'
        + "".join(parts)
        + "</div>"
    )


def _table(
    title: str, head: list[str], rows: list[list[str]], numeric: set[int], note: str = ""
) -> str:
    if not rows:
        body = '<p class="empty">nothing yet</p>'
    else:
        cls = [' class="n"' if i in numeric else "" for i in range(len(head))]
        body = (
            "<table><thead><tr>"
            + "".join(f"<th{cls[i]}>{h}</th>" for i, h in enumerate(head))
            + "</tr></thead><tbody>"
            + "".join(
                "<tr>" + "".join(f"<td{cls[i]}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
                for row in rows
            )
            + "</tbody></table>"
        )
    return f'<div class="card"><h2>{title}</h2>{body}{note}</div>'


def _top_swarms(rows: list[dict[str, Any]]) -> str:
    return _table(
        "Top swarms",
        ["info_hash", "peers", "seeders", "leechers", "downloaded"],
        [
            [
                f"<code>{escape(r['info_hash'])}</code>",
                _count(r["peers"]),
                _count(r["seeders"]),
                _count(r["leechers"]),
                _count(r["downloaded"]),
            ]
            for r in rows
        ],
        {1, 2, 3, 4},
    )


def _clients(clients: dict[str, Any]) -> str:
    every = clients["sample_every"]
    title = "Clients" + (f" (the announces of 1 peer in {every})" if every > 1 else "")
    return _table(
        title,
        ["peer_id prefix", "client", "share"],
        [
            [f"<code>{escape(c['prefix'])}</code>", escape(c["name"]), f"{c['share']:.1%}"]
            for c in clients["top"]
        ],
        {2},
    )


def _failures(by_reason: dict[str, int]) -> str:
    return _table(
        "Failures by reason",
        ["reason", "count"],
        [[escape(reason), _count(n)] for reason, n in by_reason.items()],
        {1},
    )


def _transports(transports: dict[str, dict[str, Any]]) -> str:
    """HTTP and UDP side by side; UDP's connects and the datagrams that were not requests."""

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f} ms"

    rows = []
    for name, t in transports.items():
        lat = t["latency_ms"]["announce"]
        rows.append(
            [
                f'<span id="transport-{escape(name)}">{escape(name.upper())}</span>',
                _count(t["announces"]),
                _count(t["scrapes"]),
                _count(t["failures"]["total"]),
                ms(lat["p50"]),
                ms(lat["p99"]),
            ]
        )
    udp = transports.get("udp")
    note = ""
    if udp is not None:
        bad = udp["bad_datagrams"]
        why = ", ".join(f"{escape(k)} {_count(n)}" for k, n in bad["by_reason"].items())
        note = (
            f'<p class="legend" id="udp-note">UDP: {_count(udp["connects"])} connects;'
            f" {_count(bad['total'])} datagrams that were not requests"
            f"{' (' + why + ')' if why else ''}</p>"
        )
    return _table(
        "Transports",
        ["", "announces", "scrapes", "failures", "announce p50", "announce p99"],
        rows,
        {1, 2, 3, 4, 5},
        note=note,
    )


def _latency(latency: dict[str, dict[str, Any]], events: dict[str, int]) -> str:
    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f} ms"

    rows = [
        [name, _count(h["count"]), ms(h["mean"]), ms(h["p50"]), ms(h["p90"]), ms(h["p99"])]
        for name, h in latency.items()
    ]
    ev = " · ".join(f"{name} {_count(n)}" for name, n in events.items())
    return _table(
        "Handling time",
        ["", "requests", "mean", "p50", "p90", "p99"],
        rows,
        {1, 2, 3, 4, 5},
        note=f'<p class="legend">Announces by event: {ev}</p>',
    )
