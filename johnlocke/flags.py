"""The original JohnLocke command line: each flag overrides the one configuration key it stands for.

Theory of operation
-------------------
``FLAGS`` is the one table of these flags. The parser is built from it (``add_arguments``); the
values given are recorded in the order they came (``_Record``); ``Settings.load`` lays them over
the file's TOML before validation, so a flag's value is checked exactly as the file's would be,
and every problem with it names the flag instead of the file. The same table puts the flag beside
each key it set in ``--check-config`` output (``Settings.notes``).

Beyond "the flag wins over the file":

- Two flags for one key (``--locked --open``, ``--port`` twice) are an error naming both. A
  switch repeated (``-vv``) is the same value twice, not a conflict; ``--host`` may be repeated
  to listen on several addresses.
- ``--dir`` with no mode from the file or a flag sets ``mode = "listed"``: the original daemon
  tracked only the folder's torrents unless told otherwise (``--open``).
- ``--maxpeers N`` below the default ``numwant_default`` (50) lowers it to N when the file does
  not set it, since the default may not exceed the cap.
- ``--locked`` over a file with ``mode = "private"`` is an error: the flag would quietly drop the
  passkey check of a private tracker.
- A path given as a flag is relative to the working directory (as anyone typing it in a shell
  expects); paths in the file stay relative to the file.

No file at all is fine: without ``--config`` and without ``./tracker.toml``, the built-in
defaults are the file (``Settings.path`` is None, relative paths are relative to the working
directory). An explicit ``--config PATH`` that does not exist is an error.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from johnlocke.config import AnnounceConfig, Config, ConfigError, read, validate, with_base

DEFAULT_FILE = "tracker.toml"
NO_FILE = "built-in defaults"


@dataclass(frozen=True)
class Flag:
    """One command-line flag and the configuration key it overrides."""

    names: tuple[str, ...]
    section: str
    key: str
    help: str
    metavar: str | None = None  # None: a switch that sets ``value``
    value: Any = None
    type: Callable[[str], Any] = str
    path: bool = False  # a path, taken relative to the working directory
    many: bool = False  # may be repeated; the values make a list

    @property
    def where(self) -> str:
        return f"[{self.section}] {self.key}"


FLAGS: tuple[Flag, ...] = (
    Flag(
        ("--dir",),
        "access",
        "torrents_dir",
        "track the .torrent files in DIR and its subfolders; implies --locked unless the file"
        " sets a mode",
        "DIR",
        path=True,
    ),
    Flag(
        ("--scan",),
        "access",
        "rescan_interval",
        "look for new or removed .torrent files every SECONDS (0: only on SIGHUP)",
        "SECONDS",
        type=int,
    ),
    Flag(
        ("--locked",),
        "access",
        "mode",
        "track only the torrents in DIR and the allow list",
        value="listed",
    ),
    Flag(("--open",), "access", "mode", "track any torrent", value="open"),
    Flag(
        ("--maxpeers",), "announce", "numwant_max", "send at most N peers per answer", "N", type=int
    ),
    Flag(("--mode",), "strategy", "name", "the peer-selection strategy (swarm shaping)", "NAME"),
    Flag(
        ("--host",),
        "http",
        "host",
        "listen on ADDRESS (repeat for several)",
        "ADDRESS",
        many=True,
    ),
    Flag(
        ("--port",),
        "http",
        "port",
        "listen on TCP port PORT, and UDP unless [udp] port is set (0: any free port)",
        "PORT",
        type=int,
    ),
    Flag(("-v", "--verbose"), "log", "level", "log at debug level", value="debug"),
    Flag(
        ("--workers",),
        "workers",
        "count",
        'run N tracker processes sharing the ports (needs [store] backend = "redis")',
        "N",
        type=int,
    ),
)

_DEFAULT_NUMWANT = AnnounceConfig.model_fields["numwant_default"].default


class _Record(argparse.Action):
    """Appends (flag, what was typed, value) to ``namespace.overrides``, in command-line order."""

    def __init__(self, *args: Any, flag: Flag, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flag = flag

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        given = list(getattr(namespace, self.dest, None) or [])
        name = option_string or self.flag.names[0]
        if self.flag.metavar is None:
            given.append((self.flag, name, self.flag.value))
        else:
            given.append((self.flag, f"{name} {values}", values))
        setattr(namespace, self.dest, given)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The table's flags, each recorded into ``args.overrides``."""
    group = parser.add_argument_group(
        "overrides of the configuration file (the key each one sets is in brackets)"
    )
    for flag in FLAGS:
        if flag.metavar is None:
            takes: dict[str, Any] = {"nargs": 0}
            where = f'{flag.where} = "{flag.value}"'
        else:
            takes, where = {"metavar": flag.metavar, "type": flag.type}, flag.where
        group.add_argument(
            *flag.names,
            dest="overrides",
            action=_Record,
            flag=flag,
            default=[],
            help=f"{flag.help} ({where})",
            **takes,
        )


Given = tuple[Flag, str, Any]


def _conflicts(given: Sequence[Given]) -> None:
    """Two flags for one key: ConfigError naming both."""
    seen: dict[tuple[str, str], Given] = {}
    for item in given:
        flag, text, value = item
        key = (flag.section, flag.key)
        first = seen.setdefault(key, item)
        if first is item or flag.many:
            continue
        if first[0] is flag and flag.metavar is None:
            continue  # -vv: the same switch twice
        raise ConfigError(f"{first[1]} and {text} both set {flag.where}: give one of them")


class Settings:
    """Where the configuration comes from: a file (or none) and the flags laid over it.

    ``load()`` is called at start-up and again on every SIGHUP, so the flags keep overriding
    the file after a reload. After it, ``notes`` says which keys the flags set (for
    ``--check-config``) and ``origin(section, key)`` names where a key's value came from.
    """

    def __init__(self, config: str | None, given: Sequence[Given] = ()) -> None:
        if config is None and Path(DEFAULT_FILE).exists():
            config = DEFAULT_FILE
        # Absolute, so that a reload still finds it after --daemon changed directory.
        self.path = Path(config).absolute() if config is not None else None
        self.label = config if config is not None else NO_FILE
        self.base = self.path.resolve().parent if self.path is not None else Path.cwd()
        self.given = list(given)
        _conflicts(self.given)
        self.labels: dict[tuple[str, str], str] = {}
        self.notes: dict[tuple[str, str], str] = {}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        return cls(args.config, getattr(args, "overrides", []))

    def describe(self) -> str:
        """The file, or that there is none, for --check-config."""
        if self.path is not None:
            return self.label
        return f"{NO_FILE} (no ./{DEFAULT_FILE}, no --config)"

    def origin(self, section: str, key: str) -> str:
        """The flag that set a key, else the file (or "built-in defaults")."""
        return self.labels.get((section, key), self.label)

    def load(self) -> Config:
        """Read the file (if any), apply the flags, validate; ConfigError lists every problem."""
        file_data = read(self.path, self.label) if self.path is not None else {}
        # One level deeper than the file's tables, which stay as they were for the checks below.
        data = {s: dict(v) if isinstance(v, dict) else v for s, v in file_data.items()}
        labels: dict[tuple[str, str], str] = {}
        notes: dict[tuple[str, str], str] = {}

        def put(section: str, key: str, value: Any, label: str, note: str) -> None:
            table = data.setdefault(section, {})
            if isinstance(table, dict):  # else the file is wrong there, and validation says so
                table[key] = value
            labels[section, key] = label
            notes[section, key] = note

        for flag, text, value in self.given:
            if flag.path:
                value = os.path.abspath(os.path.expanduser(value))
            if flag.many:
                earlier = labels.get((flag.section, flag.key))
                if earlier is not None:  # repeated: the values add up (the file's are replaced)
                    table = data.get(flag.section)
                    text = f"{earlier} {text}"
                    value = [*(table.get(flag.key, []) if isinstance(table, dict) else []), value]
                else:
                    value = [value]
            put(flag.section, flag.key, value, text, text)

        file_access = file_data.get("access", {})
        file_access = file_access if isinstance(file_access, dict) else {}
        mode_flag = labels.get(("access", "mode"))
        dir_flag = labels.get(("access", "torrents_dir"))
        if mode_flag == "--locked" and file_access.get("mode") == "private":
            raise ConfigError(
                f'--locked: [access] mode: would turn {self.label} [access] mode = "private" into'
                ' "listed" and drop the passkey check; leave --locked out (a private tracker'
                " tracks only its listed torrents already)"
            )
        if dir_flag and mode_flag is None and "mode" not in file_access:
            put(
                "access",
                "mode",
                "listed",
                dir_flag,
                "--dir implies --locked when no mode is set (--open keeps the tracker open)",
            )
        maxpeers = labels.get(("announce", "numwant_max"))
        file_announce = file_data.get("announce", {})
        if maxpeers and isinstance(file_announce, dict) and "numwant_default" not in file_announce:
            cap = data["announce"]["numwant_max"]
            if 0 <= cap < _DEFAULT_NUMWANT:
                put(
                    "announce",
                    "numwant_default",
                    cap,
                    maxpeers,
                    f"lowered to {maxpeers} (the default, {_DEFAULT_NUMWANT}, is above it)",
                )
        config = with_base(validate(data, self.label, labels), self.base)
        self.labels, self.notes = labels, notes
        return config

    def summary(self) -> str:
        """The flags given and the keys they set, for the --check-config header."""
        by_label: dict[str, list[str]] = {}
        for (section, key), label in self.labels.items():
            by_label.setdefault(label, []).append(f"[{section}] {key}")
        return ", ".join(f"{label} ({', '.join(keys)})" for label, keys in by_label.items())
