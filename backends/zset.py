"""A Redis-like sorted set for in-process backends: members ordered by (score, member)."""

from __future__ import annotations

from collections.abc import Iterator, KeysView

from sortedcontainers import SortedList


def index_range(length: int, start: int, end: int) -> range:
    """The indexes Redis's ``LRANGE``/``ZRANGE start end`` select (``end`` inclusive, negative
    indexes counting from the end, out-of-range indexes clamped)."""
    if start < 0:
        start = max(length + start, 0)
    if end < 0:
        end = length + end
    end = min(end, length - 1)
    return range(start, end + 1) if start <= end else range(0)


class ZSet:
    """Members with integer scores, ordered by score and then by member, like a Redis ZSET.

    New members are only appended to a list at first, and sorted in (in one batch) by the next
    read that needs the order: the finished-job sets take one add per job and are seldom read.
    """

    __slots__ = ("_order", "_unsorted", "scores")

    def __init__(self) -> None:
        #: Member -> score, in no particular order: read it, never modify it. (Its truth is the
        #: set's, tested without a call to ``__len__``: backends test it for every job.)
        self.scores: dict[str, int] = {}
        self._order: SortedList[tuple[int, str]] = SortedList()
        # Members only (their scores are in scores): a list of strings is nothing for the
        # garbage collector to track, where a (score, member) tuple per add would be.
        self._unsorted: list[str] = []

    def _ordered(self) -> SortedList[tuple[int, str]]:
        """The members in order, with the pending adds sorted in."""
        if self._unsorted:
            scores = self.scores
            self._order.update([(scores[member], member) for member in self._unsorted])
            self._unsorted.clear()
        return self._order

    def __len__(self) -> int:
        return len(self.scores)

    def __contains__(self, member: object) -> bool:
        return member in self.scores

    def __iter__(self) -> Iterator[str]:
        """Members in ascending order."""
        return (member for _, member in self._ordered())

    def members(self) -> KeysView[str]:
        """The members in no particular order (cheap: no sorting, no copy)."""
        return self.scores.keys()

    def add(self, member: str, score: int) -> None:
        """Insert ``member`` or move it to ``score``."""
        old = self.scores.get(member)
        if old is not None:
            self._ordered().remove((old, member))
        self.scores[member] = score
        self._unsorted.append(member)

    def remove(self, member: str) -> bool:
        """Remove ``member``; return whether it was there."""
        score = self.scores.get(member)
        if score is None:
            return False
        self._ordered().remove((score, member))  # sorts pending adds in: it needs the scores
        del self.scores[member]
        return True

    def score(self, member: str) -> int | None:
        """The member's score, or None."""
        return self.scores.get(member)

    def first(self) -> tuple[int, str] | None:
        """The (score, member) pair with the lowest score, or None when empty."""
        return self._ordered()[0] if self.scores else None

    def pop_min(self) -> str | None:
        """Remove and return the member with the lowest score."""
        if not self.scores:
            return None
        _, member = self._ordered().pop(0)
        del self.scores[member]
        return member

    def pop_up_to(self, max_score: int, limit: int) -> list[str]:
        """Remove and return (ascending) at most ``limit`` members scored ``<= max_score``."""
        taken: list[str] = []
        order = self._ordered()
        while self.scores and len(taken) < limit:
            score, member = order[0]
            if score > max_score:
                break
            order.pop(0)
            del self.scores[member]
            taken.append(member)
        return taken

    def max_score_between(self, low: int, high: int) -> int | None:
        """The highest score within ``[low, high]``, or None."""
        order = self._ordered()
        at = order.bisect_left((high + 1, ""))
        if at == 0:
            return None
        score = order[at - 1][0]
        return score if score >= low else None

    def range(self, start: int, end: int, *, desc: bool = False) -> list[str]:
        """Members by rank (``ZRANGE``/``ZREVRANGE`` index semantics)."""
        order = self._ordered()
        length = len(order)
        indexes = index_range(length, start, end)
        if desc:
            return [order[length - 1 - i][1] for i in indexes]
        return [order[i][1] for i in indexes]

    def count_between(self, low: int, high: int) -> int:
        """How many members are scored within ``[low, high]`` (``ZCOUNT``)."""
        order = self._ordered()
        return order.bisect_left((high + 1, "")) - order.bisect_left((low, ""))
