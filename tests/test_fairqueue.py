"""The fair queue: round-robin across members, slots overall and per member, positions."""

from __future__ import annotations

from bot.fairqueue import Caps, FairQueue

A, B, C = 10, 20, 30  # user ids


def _drain(queue: FairQueue[str], now: float = 0.0) -> list[str]:
    order = []
    while (taken := queue.take_next(now)) is not None:
        order.append(taken[1])
        queue.release(taken[0])
    return order


def test_a_batch_of_ten_does_not_starve_a_single_job() -> None:
    queue: FairQueue[str] = FairQueue(Caps(total=1, per_member=1))
    for n in range(10):
        queue.add(f"a{n}", A, f"a{n}")
    queue.add("b0", B, "b0")
    queue.add("c0", C, "c0")
    assert queue.positions()["b0"] == 2 and queue.positions()["c0"] == 3
    assert _drain(queue)[:4] == ["a0", "b0", "c0", "a1"]


def test_slots_cap_the_total_and_each_member() -> None:
    queue: FairQueue[str] = FairQueue(Caps(total=3, per_member=2))
    for n in range(3):
        queue.add(f"a{n}", A, f"a{n}")
    queue.add("b0", B, "b0")
    taken = [queue.take_next(0.0) for _ in range(4)]
    assert [t[1] for t in taken if t] == ["a0", "b0", "a1"]
    assert taken[3] is None and queue.out == 3
    queue.release("b0")
    assert queue.take_next(0.0) is None, "a slot is free, but member A already holds two"
    queue.release("a0")
    assert queue.take_next(0.0)[1] == "a2"


def test_delayed_items_wait_without_blocking_others() -> None:
    queue: FairQueue[str] = FairQueue(Caps(total=5, per_member=5))
    queue.add("retry", A, "retry", not_before=10.0)
    queue.add("fresh", B, "fresh")
    assert queue.next_ready_at(now=1.0) == 10.0
    assert _drain(queue, now=1.0) == ["fresh"]
    assert queue.next_ready_at(now=11.0) is None, "already due: only a free slot wakes the caller"
    assert _drain(queue, now=10.0) == ["retry"]
    assert queue.next_ready_at(now=1.0) is None


def test_removing_a_waiting_item_updates_positions() -> None:
    queue: FairQueue[str] = FairQueue(Caps(total=1, per_member=1))
    queue.add("a0", A, "a0")
    queue.add("b0", B, "b0")
    queue.remove("a0")
    assert queue.positions() == {"b0": 1} and "a0" not in queue and len(queue) == 1
    queue.remove("missing")


def test_held_slots_after_a_restart_count_against_the_caps() -> None:
    queue: FairQueue[str] = FairQueue(Caps(total=1, per_member=1))
    queue.hold("resumed", A)
    queue.add("b0", B, "b0")
    assert queue.take_next(0.0) is None
    assert queue.release("resumed") and not queue.release("resumed")
    assert queue.take_next(0.0)[1] == "b0"


def test_an_endpoint_at_its_cap_holds_back_only_its_own_jobs() -> None:
    queue: FairQueue[str] = FairQueue(Caps(total=4, per_member=4, per_group={"flux": 1}))
    queue.add("f0", A, "f0", group="flux")
    queue.add("f1", A, "f1", group="flux")
    queue.add("p0", A, "p0", group="default")
    queue.add("p1", B, "p1", group="default")
    taken = [queue.take_next(0.0) for _ in range(4)]
    assert [t[1] for t in taken if t is not None] == ["f0", "p1", "p0"]
    assert queue.positions() == {"f1": 1}, "the second Flux job waits for Flux's one slot"
    queue.release("p0")
    assert queue.take_next(0.0) is None, "a free default slot does not take a Flux job"
    queue.release("f0")
    assert queue.take_next(0.0) == ("f1", "f1")


def test_a_job_held_after_a_restart_counts_against_its_endpoint() -> None:
    queue: FairQueue[str] = FairQueue(Caps(total=4, per_member=4, per_group={"flux": 1}))
    queue.hold("resumed", A, "flux")
    queue.add("f1", B, "f1", group="flux")
    queue.add("p1", B, "p1", group="default")
    assert queue.take_next(0.0) == ("p1", "p1")
    assert queue.take_next(0.0) is None
    assert queue.release("resumed") and queue.take_next(0.0) == ("f1", "f1")
