"""The deduplication policy (corral.engine.deduplication): the option's parsing and encoding, and
which action an add takes given the holder of its dedup id (bullmq-features.md §4.2)."""

from __future__ import annotations

import pytest

from corral.engine.deduplication import (
    Action,
    Deduplication,
    Owner,
    decide,
    releases_on_finish,
    releases_on_remove,
    replaced_key_ttl,
    reschedules,
)
from corral.engine.errors import InvalidArgumentError
from corral.engine.job import JobOptions, decode_opts, encode_json
from corral.engine.states import JobState

S = JobState


def option(**flags: object) -> Deduplication:
    parsed = Deduplication.parse({"id": "d", **flags})
    assert parsed is not None
    return parsed


def owner(state: JobState | None, ttl: bool = False) -> Owner:
    return Owner("1", state, ttl)


@pytest.mark.parametrize(
    ("flags", "holder", "expected"),
    [
        ({}, None, Action.CLAIM),
        ({"replace": True}, None, Action.CLAIM),
        ({}, owner(S.WAITING), Action.DROP),
        ({}, owner(S.DELAYED), Action.DROP),
        ({}, owner(S.COMPLETED, ttl=True), Action.DROP),  # throttle outlives its job
        ({}, owner(None, ttl=True), Action.DROP),  # ... even once the job is deleted
        ({}, owner(None), Action.RECOVER),  # a key without TTL whose owner is gone
        ({"ttl": 10, "extend": True}, owner(S.WAITING, ttl=True), Action.EXTEND),
        ({"ttl": 10}, owner(S.WAITING, ttl=True), Action.DROP),
        ({"extend": True}, owner(S.WAITING), Action.DROP),  # extend needs a ttl
        ({"replace": True}, owner(S.DELAYED), Action.REPLACE),
        ({"replace": True}, owner(S.DELAYED, ttl=True), Action.REPLACE),
        ({"replace": True}, owner(S.WAITING), Action.IGNORE),
        ({"replace": True}, owner(S.ACTIVE), Action.IGNORE),
        ({"replace": True}, owner(None), Action.RECOVER),
        ({"replace": True, "keep_last_if_active": True}, owner(S.ACTIVE), Action.PARK),
        ({"keep_last_if_active": True}, owner(S.ACTIVE), Action.PARK),
        ({"keep_last_if_active": True}, owner(S.WAITING), Action.DROP),
        ({"keep_last_if_active": True}, owner(None), Action.RECOVER),
        ({"ttl": 10, "extend": True, "keep_last_if_active": True}, owner(S.ACTIVE), Action.PARK),
    ],
)
def test_decide_follows_bullmqs_order(
    flags: dict[str, object], holder: Owner | None, expected: Action
) -> None:
    assert decide(option(**flags), holder) is expected


def test_reschedule_only_moves_a_delayed_owner_of_a_dropped_add() -> None:
    resched = option(reschedule=True)
    assert reschedules(resched, Action.DROP, owner(S.DELAYED))
    assert not reschedules(resched, Action.DROP, owner(S.WAITING))
    assert not reschedules(option(), Action.DROP, owner(S.DELAYED))
    with_replace = option(reschedule=True, replace=True)
    assert not reschedules(with_replace, Action.IGNORE, owner(S.DELAYED))
    assert reschedules(option(reschedule=True, ttl=5, extend=True), Action.EXTEND, owner(S.DELAYED))


def test_key_ttls() -> None:
    assert option(ttl=5).key_ttl == 5
    assert option(ttl=5, keep_last_if_active=True).key_ttl is None
    assert replaced_key_ttl(option(ttl=5)) == (True, 5)  # keeps the remaining TTL
    assert replaced_key_ttl(option(ttl=5, extend=True)) == (False, 5)  # fresh TTL
    assert replaced_key_ttl(option()) == (False, None)
    assert replaced_key_ttl(option(ttl=5, keep_last_if_active=True)) == (False, None)


def test_release_rules() -> None:
    assert releases_on_finish("1", False, "1")
    assert not releases_on_finish("1", True, "1")  # a throttle key expires on its own
    assert not releases_on_finish("2", False, "1")  # a newer owner's key
    assert not releases_on_finish(None, False, "1")
    assert releases_on_remove("1", "1")
    assert not releases_on_remove("2", "1")


def test_option_round_trips_through_bullmqs_opts() -> None:
    opts = JobOptions.build(
        {"deduplication": {"id": "x", "ttl": 9, "replace": True, "keep_last_if_active": True}}
    )
    encoded = opts.to_json()
    assert encoded["de"] == {"id": "x", "ttl": 9, "replace": True, "keepLastIfActive": True}
    assert decode_opts(encode_json(encoded, "opts")).deduplication == opts.deduplication


def test_from_json_tolerates_what_another_producer_wrote() -> None:
    assert Deduplication.from_json({"ttl": 5}) is None
    assert Deduplication.from_json("x") is None
    assert Deduplication.from_json({"id": "a", "ttl": -3, "extend": 1}) == Deduplication("a")


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ({}, "Deduplication id must be provided"),
        ({"id": ""}, "Deduplication id must be provided"),
        ({"id": 1}, "must be a string"),
        ({"id": "\ud800"}, "cannot be encoded as UTF-8"),
        ({"id": "a", "ttl": True}, "ttl must be an int"),
        ({"id": "a", "ttl": -1}, "ttl must be an int"),
        ({"id": "a", "extend": "yes"}, "extend must be a bool"),
        ({"id": "a", "keepLastIfActive": True}, "unknown deduplication option"),
        (["a"], "must be a dict"),
    ],
)
def test_parse_refuses_bad_options(spec: object, text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=text):
        Deduplication.parse(spec)
