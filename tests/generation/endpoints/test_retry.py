"""The one retry policy (`endpoints/retry.py`): backoff that grows to its cap, jitter, `Retry-After` honoured
up to a limit; and the batches the commands send (`endpoints/chat_batch.py`) wait by it."""

import asyncio

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.chat_batch import ask_endpoint
from bft.generation.endpoints.retry import RetryPolicy
from tests.servers.models import Fault, Sequence
from tests.servers.tgi import TGITestServer


def most(policy: RetryPolicy, retry: int, retry_after: float | None = None) -> float:
    """The wait with the largest jitter draw."""
    return policy.delay(retry, retry_after, draw=lambda: 1.0)


def test_backoff_doubles_each_retry_up_to_its_cap():
    policy = RetryPolicy(base=0.5, cap=4.0)
    assert [most(policy, n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_jitter_draws_each_wait_between_half_and_all_of_the_backoff():
    policy = RetryPolicy(base=1.0, cap=30.0)
    assert policy.delay(3, draw=lambda: 0.0) == 2.0 and most(policy, 3) == 4.0
    waits = [policy.delay(3) for _ in range(400)]
    assert all(2.0 <= wait <= 4.0 for wait in waits)
    assert max(waits) - min(waits) > 1.0  # spread out, so requests that failed together do not return together


def test_retry_after_wins_over_a_shorter_backoff_but_is_capped():
    policy = RetryPolicy(base=0.5, cap=30.0, longest_wait=10.0)
    assert most(policy, 1, retry_after=3.0) == 3.0  # the server's window, not 0.5 s
    assert most(policy, 1, retry_after=3600.0) == 10.0  # an hour asked: at most longest_wait
    assert most(policy, 6, retry_after=1.0) == 16.0  # a longer backoff stays
    assert most(policy, 1, retry_after=0.0) == most(policy, 1) == 0.5


def test_a_batch_waits_the_retry_after_a_429_asks_then_gets_its_answer():
    limited = Sequence([Fault(429, "Rate limited", "overloaded", retry_after=1.5)])
    requests = [{"message": "Say something."}]
    with TGITestServer(limited, flavor="vllm") as server:
        replies, model = asyncio.run(ask_endpoint(server.url, None, requests, SamplingConfig(max_tokens=32), 1, "asks"))
        first, second = server.request_times[:2]
        sent = len(server.requests)
    assert second - first >= 1.4  # the server's window, not the first backoff (0.25 to 0.5 s)
    assert sent == 2 and len(replies) == 1 and replies[0] and model == "bft/test-model"
