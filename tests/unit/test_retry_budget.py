"""Retry budget: a share of requests plus a floor per second, over a sliding window."""

from __future__ import annotations

from kedge.edge.balancing.retry_budget import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_floor_allows_retries_with_little_traffic() -> None:
    clock = Clock()
    budget = RetryBudget(percent=20, min_per_second=0.3, window=10, clock=clock)
    assert [budget.try_withdraw() for _ in range(4)] == [True, True, True, False]


def test_a_share_of_requests_beyond_the_floor() -> None:
    clock = Clock()
    budget = RetryBudget(percent=20, min_per_second=0.1, window=10, clock=clock)
    for _ in range(100):
        budget.record_request()
    granted = sum(budget.try_withdraw() for _ in range(50))
    assert granted == 20  # 20% of 100 requests (the floor is 1)


def test_the_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(percent=0, min_per_second=0.2, window=10, clock=clock)
    assert budget.try_withdraw() and budget.try_withdraw() and not budget.try_withdraw()
    clock.now = 10.5  # the two retries left the window
    assert budget.try_withdraw()


def test_requests_leave_the_window_without_any_retry() -> None:
    clock = Clock()
    budget = RetryBudget(percent=20, min_per_second=0, window=10, clock=clock)
    for i in range(1000):
        clock.now = i * 0.1  # 100 s of traffic at 10 requests per second
        budget.record_request()
    assert len(budget._requests) <= 101  # only the last window is kept
    assert budget.allowed() == 20  # 20% of the ~100 requests of the last 10 s
