"""Jobs waiting for a slot at the backend, handed out round-robin across members."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Member = int  # a Discord user id: one person has one set of caps across every server
T = TypeVar("T")


@dataclass(frozen=True)
class Caps:
    """How many jobs may be out at once: overall, per member, and per group (an endpoint)."""

    total: int
    per_member: int
    # A group not named here is bounded by `total` alone.
    per_group: Mapping[Hashable, int] = field(default_factory=dict)


class FairQueue(Generic[T]):
    """Per-member FIFO queues served in rotation, with slots for jobs handed out.

    One member's batch of ten cannot starve another member's single job: the rotation gives each
    member with a waiting job one turn before anyone gets a second.
    """

    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self._queues: dict[Member, deque[Hashable]] = {}
        self._rotation: deque[Member] = deque()
        self._items: dict[Hashable, tuple[Member, T]] = {}
        self._not_before: dict[Hashable, float] = {}
        self._out: dict[Hashable, Member] = {}
        self._busy: Counter[Member] = Counter()
        self._group: dict[Hashable, Hashable] = {}  # the group of each item waiting or out
        self._group_busy: Counter[Hashable] = Counter()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def out(self) -> int:
        """How many handed-out items hold a slot."""
        return len(self._out)

    def holders(self) -> set[Hashable]:
        """The keys of every handed-out item that holds a slot."""
        return set(self._out)

    def waiting_keys(self) -> set[Hashable]:
        """The keys of every item still waiting for a slot."""
        return set(self._items)

    def add(
        self,
        key: Hashable,
        member: Member,
        item: T,
        *,
        not_before: float | None = None,
        group: Hashable = None,
    ) -> None:
        """Queue `item` behind the member's other items; `not_before` delays it (monotonic time)."""
        if key in self._items:
            return
        self._items[key] = (member, item)
        self._group[key] = group
        self._queues.setdefault(member, deque()).append(key)
        if not_before is not None:
            self._not_before[key] = not_before
        if member not in self._rotation:
            self._rotation.append(member)

    def remove(self, key: Hashable) -> None:
        """Drop a waiting item (cancelled, failed); nothing happens if it is not waiting."""
        found = self._items.pop(key, None)
        self._not_before.pop(key, None)
        if found is None:
            return
        if key not in self._out:
            self._group.pop(key, None)
        member = found[0]
        queue = self._queues[member]
        queue.remove(key)
        if not queue:
            self._drop_member(member)

    def take_next(self, now: float) -> tuple[Hashable, T] | None:
        """The next item in rotation whose member has a free slot; it then holds a slot."""
        if len(self._out) >= self.caps.total:
            return None
        for _ in range(len(self._rotation)):
            member = self._rotation[0]
            self._rotation.rotate(-1)
            if self._busy[member] >= self.caps.per_member:
                continue
            queue = self._queues[member]
            key = next(
                (k for k in queue if self._not_before.get(k, 0.0) <= now and self._group_free(k)),
                None,
            )
            if key is None:
                continue
            item = self._items[key][1]
            group = self._group[key]
            self.remove(key)
            self.hold(key, member, group)
            return key, item
        return None

    def hold(self, key: Hashable, member: Member, group: Hashable = None) -> None:
        """Count `key` against the slots (a job resumed at the backend after a restart)."""
        if key not in self._out:
            self._out[key] = member
            self._busy[member] += 1
            self._group[key] = group
            self._group_busy[group] += 1

    def release(self, key: Hashable) -> bool:
        """Free the slot `key` held; True if it held one."""
        member = self._out.pop(key, None)
        if member is None:
            return False
        self._busy[member] -= 1
        if not self._busy[member]:
            del self._busy[member]
        group = self._group.pop(key, None)
        self._group_busy[group] -= 1
        if not self._group_busy[group]:
            del self._group_busy[group]
        return True

    def delayed(self, now: float) -> set[Hashable]:
        """The keys of waiting items not yet due at `now`."""
        return {key for key, at in self._not_before.items() if at > now}

    def next_ready_at(self, now: float) -> float | None:
        """When the earliest item still delayed after `now` becomes ready, if any is.

        Items already due but waiting for a slot are not counted: a freed slot wakes the caller.
        """
        return min((at for at in self._not_before.values() if at > now), default=None)

    def positions(self) -> dict[Hashable, int]:
        """1-based place of every waiting item in the order the rotation will hand them out."""
        queues = [list(self._queues[m]) for m in self._rotation]
        order: dict[Hashable, int] = {}
        depth = 0
        while queues:
            for queue in queues:
                order[queue[depth]] = len(order) + 1
            depth += 1
            queues = [q for q in queues if depth < len(q)]
        return order

    def waiting(self, key: Hashable) -> T | None:
        found = self._items.get(key)
        return found[1] if found else None

    def _group_free(self, key: Hashable) -> bool:
        group = self._group[key]
        return self._group_busy[group] < self.caps.per_group.get(group, self.caps.total)

    def _drop_member(self, member: Member) -> None:
        del self._queues[member]
        self._rotation.remove(member)
