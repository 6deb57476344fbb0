"""The offline rule, one boundary table through every place that applies it.

A node is Offline once it stopped, or when its last check-in is more than
max(offline_after, 2 x its heartbeat interval) before now; exactly that long
is still online. Python (`models.is_offline`, behind every status shown and
SQLite's claim) and SQL (`store.common.offline_sql`, behind both reaps and
PostgreSQL's exchange) must agree on every row, on both backends.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

import octonodes as lib
from octonodes.models import NodeStatus, is_offline
from octonodes.settings import ClusterSettings, parse_duration
from octonodes.store.base import Registration

# (offline_after as set, or None for the default; heartbeat interval; seconds
# since the last check-in; stopped cleanly) -> offline?
CASES = [
    (None, 10.0, 0, False, False),
    (None, 10.0, 59.999, False, False),
    (None, 10.0, 60, False, False),
    (None, 10.0, 60.001, False, True),
    (None, 40.0, 70, False, False),      # twice the interval outweighs offline_after
    (None, 40.0, 80, False, False),
    (None, 40.0, 80.001, False, True),
    (None, 10.0, 0, True, True),         # a clean stop is offline at once
    ("2m", 10.0, 119.999, False, False),
    ("2m", 10.0, 120, False, False),
    ("2m", 10.0, 120.001, False, True),
    ("2m", 0.001, 120.5, False, True),
    ("5m", 10.0, 300, False, False),
    ("5m", 10.0, 300.001, False, True),
]


def _default_offline_after() -> float:
    return ClusterSettings().offline_after


def test_the_python_rule_on_the_table():
    from datetime import UTC, datetime

    seen = datetime(2030, 1, 1, tzinfo=UTC)
    for offline_after, interval, age, stopped, expected in CASES:
        after = _default_offline_after() if offline_after is None else \
            parse_duration(offline_after)
        got = is_offline(now=seen + timedelta(seconds=age), last_seen=seen, stopped=stopped,
                         offline_after=after, heartbeat_interval=interval)
        assert got is expected, (offline_after, interval, age, stopped)


def test_every_store_path_agrees_with_the_python_rule(clocked):
    """For each row: the node's status (Python), the claim (SQLite's claim in
    Python, PostgreSQL's exchange function in SQL) and reap (SQL on both)."""
    cluster, clock = clocked
    store = cluster.store
    assert cluster.settings().offline_after == _default_offline_after()
    for number, (offline_after, interval, age, stopped, expected) in enumerate(CASES):
        if offline_after is not None:
            cluster.set_setting("offline_after", offline_after)
        clock.advance(1000)  # every earlier node is long gone
        store.reap()
        name, instance = f"edge-{number}", f"instance-{number}"
        store.register(Registration(name=name, instance_id=instance, host="test-host", pid=1,
                                    version=lib.__version__, heartbeat_interval=interval,
                                    task_cap=5))
        cluster.add_tasks([["true"], ["true"]])
        running = store.claim(name, instance, 1)
        assert len(running) == 1, number
        if stopped:
            store.mark_stopped(name, instance)
        clock.advance(age)
        row = (offline_after, interval, age, stopped)

        status = cluster.node(name).status
        assert (status is NodeStatus.OFFLINE) is expected, (row, status)

        _, claimed = store.exchange(name, instance, [], [], 1)
        assert (not claimed) is expected, (row, "claim", claimed)

        reaped = store.reap()
        assert (running[0].id in reaped.lost + reaped.requeued) is expected, (row, "reap", reaped)


@pytest.mark.parametrize("spelling", ["90s", "1.5m"])
def test_the_exchange_reads_offline_after_as_stored(clocked, spelling):
    """PostgreSQL's exchange reads the setting's stored text itself: a node
    seen 89 s ago claims, one seen 91 s ago does not, however it was spelled."""
    cluster, clock = clocked
    cluster.set_setting("offline_after", spelling)
    store = cluster.store
    store.register(Registration(name="n", instance_id="i", host="h", pid=1,
                                version=lib.__version__, heartbeat_interval=1.0, task_cap=5))
    cluster.add_tasks([["true"], ["true"]])
    clock.advance(89)
    assert store.exchange("n", "i", [], [], 1)[1]
    clock.advance(2)
    assert not store.exchange("n", "i", [], [], 1)[1]


def test_the_defaults_are_the_settings_tables():
    """Defaults are written once, in the settings table: the parsed settings
    with nothing stored are exactly the table's defaults, parsed."""
    from octonodes.settings import SETTINGS

    unset = ClusterSettings.from_stored({})
    assert unset == ClusterSettings()
    for key, setting in SETTINGS.items():
        if setting.default:
            assert getattr(unset, key) == setting.parse(setting.default), key


@pytest.mark.parametrize("stored,offline_after", [
    ({"offline_after": "90s", "heartbeat_interval": "40s"}, 90),
    ({"offline_after": "70s", "heartbeat_interval": "40s"}, 60),  # not over twice: defaults
    ({"offline_after": "1s"}, 60),                                # not over twice 10s
    ({"offline_after": "400d"}, 60),                              # out of range
    ({"offline_after": "lots", "heartbeat_interval": "-5"}, 60),  # does not parse
], ids=["valid", "under-twice", "under-twice-default", "out-of-range", "no-parse"])
def test_the_exchange_reads_hand_written_values_as_the_nodes_do(clocked, db, backend, stored,
                                                                 offline_after):
    """Values written into the database by hand, past `config set`'s checks:
    the claim (PostgreSQL's exchange reads them in SQL) takes the
    offline_after that every node and command reads."""
    from test_setting_ranges import write_raw_settings

    cluster, clock = clocked
    write_raw_settings(db, backend, stored)
    assert cluster.settings().offline_after == offline_after
    store = cluster.store
    store.register(Registration(name="n", instance_id="i", host="h", pid=1,
                                version=lib.__version__, heartbeat_interval=1.0, task_cap=5))
    cluster.add_tasks([["true"], ["true"]])
    clock.advance(offline_after - 0.5)
    assert store.exchange("n", "i", [], [], 1)[1]
    clock.advance(1)
    assert not store.exchange("n", "i", [], [], 1)[1]
