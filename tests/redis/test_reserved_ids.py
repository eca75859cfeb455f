"""The Redis key schema against the engine's list of reserved job ids (issue 13, item 1): a
job's hash is ``<prefix>:<queue>:<id>``, so every suffix a queue key uses must be an id that no
job may take. A key suffix added to the schema or to a script without reserving it fails here."""

from __future__ import annotations

import re

from corral.backends.redis.keys import KEY_TYPES, TRANSITION_LOG, QueueKeys
from corral.backends.redis.scripts import SCRIPT_NAMES, load_source
from corral.engine.inputs import RESERVED_JOB_IDS

BASE = "bull:q:"


def test_every_key_of_the_schema_is_a_reserved_id() -> None:
    keys = QueueKeys.of("bull", "q")
    named = {
        getattr(keys, name).removeprefix(BASE)
        for name, member in vars(QueueKeys).items()
        if isinstance(member, property)
    }
    assert named <= set(KEY_TYPES)  # every property names a key of the schema
    assert set(KEY_TYPES) | {TRANSITION_LOG} <= RESERVED_JOB_IDS


def test_every_key_a_script_takes_or_builds_is_a_reserved_id() -> None:
    sources = [load_source(name) for name in SCRIPT_NAMES]
    taken = {suffix for source in sources for suffix in source.keys}
    # Scripts build more keys from the queue's base string: ``base .. 'active'``.
    built = {
        suffix
        for source in sources
        for suffix in re.findall(r"\bbase \.\. '([a-z-]+)'", source.text)
    }
    assert taken, "no KEYS in the script headers: the test is out of date"
    assert built, "no key built in the scripts: the pattern is out of date"
    assert taken | built <= RESERVED_JOB_IDS, (taken | built) - RESERVED_JOB_IDS


def test_the_ids_of_bullmq_features_to_come_are_reserved_already() -> None:
    # BullMQ 6.7's per-queue keys that corral does not use yet (bullmq-semantics.md §1.2).
    later = {"paused", "waiting-children", "limiter", "repeat", "de", "dn", "metrics"}
    assert later <= RESERVED_JOB_IDS
