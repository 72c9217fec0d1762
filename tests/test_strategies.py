"""Strategies: the contract kit on every built-in, loading by name, and what each one shapes."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from johnlocke.config import validate
from johnlocke.strategy import StrategyLoadError, StrategySet, find_class, known_names, resolve
from johnlocke.testing import check_strategy

ROOT = Path(__file__).resolve().parents[1]
BUILT_INS = ["random", "opposite-role", "locality", "small-group", "recent", "spread"]


def test_every_built_in_is_registered():
    assert set(BUILT_INS) <= set(known_names())


@pytest.mark.parametrize("name", BUILT_INS)
def test_built_in_keeps_the_contract(name):
    check_strategy(lambda: resolve(name))


def test_example_plugin_keeps_the_contract():
    check_strategy(lambda: resolve("example_half_seeders", {}, [ROOT / "strategies"]))


def test_contract_kit_catches_a_strategy_that_sends_the_announcer():
    class Selfish:
        def select(self, swarm, numwant, rng):
            return [(swarm.table, swarm.slot, 1)]

    with pytest.raises(AssertionError, match="sent the announcer itself"):
        check_strategy(Selfish)


def test_contract_kit_catches_too_many_and_the_wrong_family():
    class Greedy:
        def select(self, swarm, numwant, rng):
            return swarm.sample(True, numwant + 5, rng) + swarm.sample(False, numwant + 5, rng)

    with pytest.raises(AssertionError, match="for numwant="):
        check_strategy(Greedy)

    class Crossing:
        def select(self, swarm, numwant, rng):
            return [(swarm.table ^ 2, 0, 1)]

    with pytest.raises(AssertionError, match="other address family|outside the table"):
        check_strategy(Crossing)


def test_contract_kit_catches_a_strategy_that_ignores_the_seed():
    class Noisy:
        def select(self, swarm, numwant, rng):
            return swarm.sample(False, numwant, random.Random())

    with pytest.raises(AssertionError, match="same seed"):
        check_strategy(Noisy)


# --- loading ----------------------------------------------------------------------------------


def test_load_by_module_and_class():
    s = resolve("johnlocke_strategies.recent:RecentStrategy", {"pool": 10})
    assert type(s).__name__ == "RecentStrategy" and s.pool == 10


def test_load_a_dropped_file_from_paths(tmp_path):
    (tmp_path / "mine.py").write_text(
        "class Mine:\n    def select(self, swarm, numwant, rng):\n        return []\n"
    )
    assert type(resolve("mine", {}, [tmp_path])).__name__ == "Mine"
    assert type(resolve("mine:Mine", {}, [tmp_path])).__name__ == "Mine"


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("nosuch", {}, "strategy 'nosuch': no such strategy (built-in: locality, opposite-role"),
        ("nosuch.module:X", {}, "strategy 'nosuch.module:X': cannot import 'nosuch.module'"),
        ("johnlocke_strategies.recent:Nope", {}, "has no attribute 'Nope'"),
        ("random", {"x": 1}, "strategy 'random' takes no options (got x)"),
        ("locality", {"prefix_v4": 40}, "strategy 'locality': bad option prefix_v4: Input should"),
        ("locality", {"prefixv4": 24}, "strategy 'locality': bad option prefixv4: unknown option"),
        ("", {}, "strategy name is empty"),
    ],
)
def test_load_errors_name_the_strategy_and_the_cause(name, options, message):
    with pytest.raises(StrategyLoadError) as err:
        resolve(name, options)
    assert message in str(err.value)


def test_broken_plugin_files_name_themselves(tmp_path):
    (tmp_path / "broken.py").write_text("import nosuchmodule_xyz\n")
    with pytest.raises(StrategyLoadError, match=r"strategy 'broken': error in .*broken.py.*nosuch"):
        resolve("broken", {}, [tmp_path])
    (tmp_path / "two.py").write_text(
        "class A:\n    def select(self, s, n, r): return []\n"
        "class B:\n    def select(self, s, n, r): return []\n"
    )
    with pytest.raises(StrategyLoadError, match="exactly one class with a select"):
        resolve("two", {}, [tmp_path])
    (tmp_path / "failing.py").write_text(
        "class F:\n    def __init__(self): raise RuntimeError('no db')\n"
        "    def select(self, s, n, r): return []\n"
    )
    with pytest.raises(StrategyLoadError, match="strategy 'failing': failed to start: .*no db"):
        resolve("failing", {}, [tmp_path])


def test_rules_choose_per_swarm():
    config = validate(
        {
            "strategy": {
                "name": "random",
                "rules": [
                    {"name": "recent", "info_hashes": ["ab" * 20]},
                    {"name": "small-group", "max_peers": 10},
                    {"name": "locality", "min_peers": 1000},
                ],
            }
        }
    )
    chooser = StrategySet(config.strategy)

    class View:
        def __init__(self, ih, size):
            self.info_hash, self.complete, self.incomplete = ih, size, 0

    assert chooser.choose(View(b"\xab" * 20, 500)).name == "recent"
    assert chooser.choose(View(b"\x01" * 20, 5)).name == "small-group"
    assert chooser.choose(View(b"\x01" * 20, 500)).name == "random"
    assert chooser.choose(View(b"\x01" * 20, 5000)).name == "locality"


def test_a_bad_rule_names_itself():
    config = validate(
        {"strategy": {"rules": [{"name": "locality", "options": {"pool": 0}, "min_peers": 1}]}}
    )
    with pytest.raises(
        StrategyLoadError, match=r"rules\[0\]: strategy 'locality': bad option pool"
    ):
        StrategySet(config.strategy)


def test_readme_example_is_the_shipped_file():
    readme = (ROOT / "README.md").read_text()
    shipped = (ROOT / "strategies" / "example_half_seeders.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert shipped in blocks
    assert len(shipped.splitlines()) <= 25


def test_find_class_prefers_registered_names(tmp_path):
    (tmp_path / "random.py").write_text("class X:\n    def select(self, s, n, r): return []\n")
    assert find_class("random", [tmp_path]).__name__ == "RandomStrategy"
