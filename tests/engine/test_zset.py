"""The memory backend's sorted set against a plain dict sorted on every read (Hypothesis).

ZSet defers sorting new members in until a read needs the order, so any interleaving of adds,
re-adds with a new score, removals and ordered reads must still see Redis ZSET semantics.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.backends.zset import ZSet

members = st.sampled_from(["a", "b", "c", "d", "e"])
scores = st.integers(0, 5)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), members, scores),
        st.tuples(st.just("remove"), members, st.just(0)),
        st.tuples(st.just("pop_min"), st.just(""), st.just(0)),
        st.tuples(st.just("pop_up_to"), st.just(""), scores),
        st.tuples(st.just("first"), st.just(""), st.just(0)),
        st.tuples(st.just("max_between"), st.just(""), scores),
    ),
    max_size=40,
)


def _ordered(model: dict[str, int]) -> list[tuple[int, str]]:
    return sorted((score, member) for member, score in model.items())


@given(operations)
def test_zset_matches_a_sorted_dict(ops: list[tuple[str, str, int]]) -> None:
    zset, model = ZSet(), {}
    for name, member, number in ops:
        if name == "add":
            zset.add(member, number)
            model[member] = number
        elif name == "remove":
            assert zset.remove(member) == (model.pop(member, None) is not None)
        elif name == "pop_min":
            expected = _ordered(model)[0][1] if model else None
            if expected is not None:
                del model[expected]
            assert zset.pop_min() == expected
        elif name == "pop_up_to":
            taken = [member for score, member in _ordered(model) if score <= number][:2]
            for gone in taken:
                del model[gone]
            assert zset.pop_up_to(number, 2) == taken
        elif name == "first":
            assert zset.first() == (_ordered(model)[0] if model else None)
        else:
            within = [score for score, _ in _ordered(model) if 1 <= score <= number]
            assert zset.max_score_between(1, number) == (max(within) if within else None)
        assert len(zset) == len(model)
        assert sorted(zset.members()) == sorted(model)
    assert list(zset) == [member for _, member in _ordered(model)]
    assert zset.range(0, -1, desc=True) == [member for _, member in _ordered(model)][::-1]
