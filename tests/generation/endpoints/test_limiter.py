"""Each endpoint's adaptive limit: it grows on a server that rewards it, backs off on 429s, holds when fixed,
keeps a small queue by the server's own /metrics, and hands slots to later stages first."""

import asyncio
import json
import threading
import time

import pytest

from bft.generation.cli import main
from bft.generation.endpoints.limiter import AdaptiveLimit, Waiter, parse_load
from tests.servers.models import (
    Fault,
    paper_model,
    slow,  # every answer after a fixed delay: more in flight, more tokens/s
)
from tests.servers.tgi import TGITestServer


def corpus(tmp_path, documents: int):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Document {i} on tides and the moon."}) + "\n"
                            for i in range(documents)))  # fmt: skip
    return path


def run(tmp_path, server, documents: int, *extra) -> dict:
    out = tmp_path / "o"
    args = ["generate", str(corpus(tmp_path, documents)), "--out", str(out), "--endpoint", server.url]
    assert main([*args, "--stages", "backtranslate", "--no-progress", *extra]) == 0
    return json.loads((out / "stats.json").read_text())


def test_the_limit_grows_on_a_server_that_rewards_it(tmp_path):
    # each answer takes 0.25 s however many run at once: 64 in flight ask the client for only 256 requests a
    # second, which a busy machine still sends, so the limit's growth is the server's reward, not the load's
    with TGITestServer(slow(0.25), flavor="vllm") as server:  # no /info, no /metrics: the replies steer
        stats = run(tmp_path, server, 200)
        peak = server.peak_in_flight
    limit = next(iter(stats["endpoints"].values()))
    assert limit["mode"] == "auto" and limit["steered_by"] == "replies"
    assert limit["limit_low"] == 8 and limit["limit_high"] >= 64 and peak > 32  # far past the old fixed 8
    assert stats["backtranslate"]["kept"] == 200


def test_the_limit_backs_off_on_429s_and_loses_nothing(tmp_path):
    lock, state = threading.Lock(), {"in": 0}

    def capped(request):  # a hosted API: 429 with Retry-After above 12 requests at once
        with lock:
            state["in"] += 1
            over = state["in"] > 12
        try:
            if over:
                return Fault(429, "Too many requests", "rate_limit", retry_after=0.05)
            time.sleep(0.03)
            return paper_model(request)
        finally:
            with lock:
                state["in"] -= 1

    with TGITestServer(capped, flavor="vllm") as server:
        stats = run(tmp_path, server, 200)
    limit = next(iter(stats["endpoints"].values()))
    assert limit["overloaded_429_503"] > 0 and limit["backoffs"] > 0
    assert limit["limit_settled"] <= 24  # near the cap (12) it was never told, far under where it grows to unrefused
    assert stats["backtranslate"]["kept"] == 200 and stats["backtranslate"]["retries_by_cause"]["overloaded"] > 0


def test_a_fixed_limit_holds(tmp_path):
    with TGITestServer(slow(0.02), flavor="vllm") as server:
        stats = run(tmp_path, server, 120, "--max-concurrency", "5")
        assert server.peak_in_flight == 5
    limit = next(iter(stats["endpoints"].values()))
    assert (limit["mode"], limit["limit_low"], limit["limit_high"], limit["limit_settled"]) == ("fixed", 5, 5, 5)


def batched(server, batch: int, step: float):
    """A server that runs `batch` requests at once: an answer takes one `step` per batch ahead of it."""

    def script(request):
        with server.lock:
            position = server.in_flight
        reply = paper_model(request)
        reply.delay = step * -(-position // batch)
        return reply

    return script


@pytest.mark.parametrize("flavor", ["vllm", "sglang", "tgi"])
def test_the_servers_own_load_keeps_a_small_queue_there(tmp_path, flavor):
    with TGITestServer(flavor=flavor, tgi_info=False) as server:
        # a step of 0.5 s: the run (~7 s) lasts many /metrics reads even when a busy machine spaces them at
        # their longest (2 s), so the settled limit is the steering's, not the start's
        server.script = batched(server, 16, 0.5)
        server.metrics_batch = 16  # 16 run at once; the rest only queue
        stats = run(tmp_path, server, 200)
    limit = next(iter(stats["endpoints"].values()))
    assert limit["steered_by"] == "server /metrics"
    assert 16 <= limit["limit_settled"] <= 40  # the batch plus a small queue, not hundreds queued
    assert stats["backtranslate"]["kept"] == 200


def test_a_server_whose_metrics_cost_it_time_is_read_less_often(tmp_path):
    """Each /metrics read of vLLM's CPU build costs it 14 ms of a core: ten a second would take a seventh of
    a core from its engine. bft reads a costly /metrics less often (at most a 50th of the time in reads)."""
    with TGITestServer(flavor="vllm", tgi_info=False) as server:
        server.script = batched(server, 16, 0.3)
        server.metrics_batch = 16
        server.metrics_cost = 0.05  # 50 ms a read: one every 2 s at most
        began = time.monotonic()
        stats = run(tmp_path, server, 96)
        wall = time.monotonic() - began
    assert next(iter(stats["endpoints"].values()))["steered_by"] == "server /metrics"
    assert 1 <= server.metrics_reads <= wall / 2 + 2  # every 0.1 s would be ten times as many
    assert stats["backtranslate"]["kept"] == 96


def test_the_metrics_of_vllm_sglang_and_tgi_are_read():
    vllm = 'vllm:num_requests_running{model_name="m",engine="0"} 12.0\nvllm:num_requests_waiting{model_name="m"} 3\n'
    vllm += '# HELP x\nvllm:kv_cache_usage_perc{model_name="m"} 0.5\n'
    load = parse_load(vllm, 1.0)
    assert (load.running, load.waiting, load.cache_use) == (12.0, 3.0, 0.5)
    load = parse_load('sglang:num_running_reqs{name="m"} 7\nsglang:num_queue_reqs{name="m"} 0\n', 1.0)
    assert (load.running, load.waiting, load.cache_use) == (7.0, 0.0, None)
    assert parse_load("tgi_queue_size 4\ntgi_batch_current_size 32\n", 1.0).running == 32.0
    assert parse_load("process_cpu_seconds_total 3.5\n", 1.0) is None


def test_a_freed_slot_goes_to_the_later_stage_first():
    async def scenario():
        limit = AdaptiveLimit("e", fixed=1)
        limit.take()
        first_document, next_stage = Waiter(priority=0), Waiter(priority=2)  # the new document came first
        limit.wait(first_document)
        limit.wait(next_stage)
        assert not limit.has_room(priority=5)
        limit.release(tokens=10, latency=0.1)
        assert next_stage.future.done() and not first_document.future.done() and limit.in_flight == 1
        limit.release(tokens=10, latency=0.1)
        assert first_document.future.done()

    asyncio.run(scenario())


def test_the_only_endpoint_stays_in_rotation_through_a_burst_of_failures(tmp_path):
    lock, state = threading.Lock(), {"n": 0}

    def bursty(request):  # every tenth request of the first 100 is a burst of 3 resets
        with lock:
            state["n"] += 1
            number = state["n"]
        if number < 100 and number % 10 < 3:
            return Fault(reset=True)
        time.sleep(0.01)
        return paper_model(request)

    with TGITestServer(bursty, flavor="vllm") as server:
        stats = run(tmp_path, server, 150)
    assert stats["backtranslate"]["kept"] == 150
    assert stats["backtranslate"]["endpoint_events"] == {}  # backed off, never dropped
    assert stats["backtranslate"]["retries_by_cause"]["connection"] > 0
