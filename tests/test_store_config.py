"""[store] and [workers]: what a configuration may say about where swarms live and how many
processes serve them, and the clear refusals when it is wrong."""

from __future__ import annotations

import pytest

from johnlocke.config import ConfigError, validate, workers_refused


def test_defaults_are_the_memory_store_and_one_process():
    config = validate({})
    assert config.store.backend == "memory" and config.workers.count == 1
    assert workers_refused(config, 1) is None


@pytest.mark.parametrize(
    "store,fragment",
    [
        ({"backend": "postgres"}, "[store] backend"),
        ({"url": "http://127.0.0.1:6379"}, "redis://, rediss:// (TLS) or unix://"),
        ({"prefix": "a{b}"}, "without spaces, { or }"),
        ({"prefix": ""}, "1 to 64 printable"),
        ({"timeout": 0}, "[store] timeout"),
        ({"pool": 0}, "[store] pool"),
        ({"cluster": True, "url": "unix:///run/redis.sock"}, "cluster = true needs"),
        ({"urll": "redis://x"}, "unknown key"),
    ],
)
def test_bad_store_settings_name_the_key(store, fragment):
    with pytest.raises(ConfigError, match="tracker.toml") as info:
        validate({"store": store}, "tracker.toml")
    assert fragment in str(info.value)


def test_several_workers_need_redis():
    memory = validate({"workers": {"count": 4}})
    why = workers_refused(memory, 4)
    assert why is not None and 'backend = "redis"' in why
    redis = validate({"workers": {"count": 4}, "store": {"backend": "redis"}})
    assert workers_refused(redis, 4) is None
    with pytest.raises(ConfigError, match=r"\[workers\] count"):
        validate({"workers": {"count": 0}})
