"""A simulated vLLM server for the throughput benchmark: no `/info`, an unbounded queue, Prometheus `/metrics`.

Modelled on vLLM's (V1) scheduler as its documentation and metrics describe it (its repository is over
the size this project's source-fetching tool brings, so the code itself was not read): every engine
step schedules the running requests first (one decode token each), then admits waiting requests in
arrival order while the step's token budget (`max_num_batched_tokens`, prefill tokens counted) and the running limit (`max_num_seqs`)
allow and the KV cache has room for their prompts. A running request that needs a KV block the cache
cannot give preempts the most recently admitted request, which goes back to the front of the queue and
is recomputed from scratch (vLLM's RECOMPUTE preemption). Nothing is refused: the queue has no bound and
there is no 429 (unless `--concurrency-limit` makes it a rate-limited hosted API, below).

One step takes `base + per_sequence x running + prefill_per_token x admitted prompt tokens` seconds, on
an exact clock while busy. `--slowdown-at T --slowdown FACTOR` multiplies that from T seconds after the
first request on (another tenant arrives). `--concurrency-limit L` answers 429 with `Retry-After` to any
request beyond L in the system, as a hosted endpoint with a concurrency cap bft is not told about.

Replies depend on the prompt, so all three of bft's stages parse them: a curation prompt gets a
`Score: 5` line, a rewriting prompt a `[RES] ... [/RES]` answer, anything else a question. A token is a
whitespace-separated word.

It speaks vLLM's protocol as `tests/servers/protocol.py` writes it (shared with the test server and
`simulated_tgi.py`), on that module's asyncio HTTP/1.1. Routes: `/v1/models` (with `max_model_len`),
`/health`, `/v1/chat/completions`, `/v1/completions`, `/metrics` (vllm:num_requests_running,
vllm:num_requests_waiting, vllm:kv_cache_usage_perc, vllm:num_preemptions_total,
vllm:generation_tokens_total) and `/stats` (the benchmark's: tokens made and the busy window, first arrival
to last answer).

    python benchmarks/simulated_vllm.py --instances 4 --speeds 1,1,0.5,0.25 --port-file ports.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.servers
from tests.servers import protocol  # noqa: E402

MODEL = "bft/simulated-vllm"


@dataclass
class VLLMConfig:
    base_seconds: float = 0.008
    per_sequence_seconds: float = 0.00006
    prefill_seconds_per_token: float = 0.00001
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    kv_cache_tokens: int = 120_000
    new_tokens: int = 64
    max_model_len: int = 8192
    slowdown_at: float = 0.0  # seconds after the first request; 0: never
    slowdown: float = 1.0  # step time multiplied by this from then on
    concurrency_limit: int = 0  # 0: none; else 429 beyond it (a hosted API)
    retry_after: float = 1.0
    metrics: bool = True  # serve Prometheus /metrics (a hosted API does not)
    speed: float = 1.0  # this instance's speed (step time divided by it)


@dataclass
class Request:
    prompt_tokens: int
    target: int
    future: asyncio.Future
    generated: int = 0


class Scheduler:
    """One instance's engine loop (module docstring)."""

    def __init__(self, config: VLLMConfig):
        self.config = config
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.wakeup = asyncio.Event()
        self.in_system = 0
        self.rejected_429 = 0
        self.preemptions = 0
        self.generated_total = 0  # tokens of answers delivered
        self.computed_total = 0  # tokens decoded, recomputed ones included
        self.requests = 0
        self.first_arrival: float | None = None
        self.last_answer: float | None = None

    def kv_used(self) -> int:
        return sum(r.prompt_tokens + r.generated for r in self.running)

    async def generate(self, prompt_tokens: int, max_tokens: int) -> int:
        loop = asyncio.get_running_loop()
        limit = self.config.concurrency_limit
        if limit and self.in_system >= limit:
            self.rejected_429 += 1
            raise OverflowError
        self.first_arrival = self.first_arrival if self.first_arrival is not None else loop.time()
        self.in_system += 1
        request = Request(prompt_tokens, max(1, min(self.config.new_tokens, max_tokens)), loop.create_future())
        self.waiting.append(request)
        self.wakeup.set()
        try:
            return await request.future
        finally:
            self.in_system -= 1

    def step_seconds(self, admitted_tokens: int, now: float) -> float:
        c = self.config
        seconds = (
            c.base_seconds + c.per_sequence_seconds * len(self.running) + c.prefill_seconds_per_token * admitted_tokens
        )
        if c.slowdown_at and self.first_arrival is not None and now - self.first_arrival >= c.slowdown_at:
            seconds *= c.slowdown
        return seconds / c.speed

    def schedule(self) -> int:
        """One step's schedule; returns the prompt tokens admitted (their prefill cost)."""
        c = self.config
        # decodes first: each running request needs one more KV slot; preempt the newest when full
        while self.running and self.kv_used() + len(self.running) > c.kv_cache_tokens:
            victim = self.running.pop()
            victim.generated = 0  # recompute from scratch
            self.waiting.appendleft(victim)
            self.preemptions += 1
        budget = c.max_num_batched_tokens - len(self.running)
        admitted = 0
        while self.waiting and len(self.running) < c.max_num_seqs:
            candidate = self.waiting[0]
            if candidate.prompt_tokens > budget or self.kv_used() + candidate.prompt_tokens + 1 > c.kv_cache_tokens:
                break
            self.waiting.popleft()
            self.running.append(candidate)
            budget -= candidate.prompt_tokens
            admitted += candidate.prompt_tokens
        return admitted

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time()
        while True:
            if not self.running and not self.waiting:
                self.wakeup.clear()
                await self.wakeup.wait()
                clock = loop.time()
                continue
            admitted = self.schedule()
            duration = self.step_seconds(admitted, loop.time())
            clock = max(clock, loop.time() - duration) + duration
            await asyncio.sleep(max(0.0, clock - loop.time()))
            still = []
            for request in self.running:
                request.generated += 1
                self.computed_total += 1
                if request.generated >= request.target:
                    self.requests += 1
                    self.generated_total += request.generated
                    self.last_answer = clock
                    if not request.future.done():
                        request.future.set_result(request.generated)
                else:
                    still.append(request)
            self.running = still

    def metrics(self) -> str:
        use = self.kv_used() / self.config.kv_cache_tokens
        running, waiting = protocol.LOAD_METRICS["vllm"]
        samples = (
            (running, "gauge", float(len(self.running))),
            (waiting, "gauge", float(len(self.waiting))),
            (protocol.VLLM_KV_CACHE_USAGE, "gauge", round(use, 4)),
            (protocol.VLLM_PREEMPTIONS, "counter", float(self.preemptions)),
            (protocol.VLLM_GENERATION_TOKENS, "counter", float(self.computed_total)),
        )
        return protocol.prometheus(samples, MODEL)

    def stats(self) -> dict:
        window = (self.last_answer - self.first_arrival) if self.first_arrival and self.last_answer else None
        return {
            "requests": self.requests,
            "completion_tokens": self.generated_total,
            "recomputed_tokens": self.computed_total - self.generated_total,
            "preemptions": self.preemptions,
            "rejected_429": self.rejected_429,
            "busy_seconds": window,
            "tokens_per_second_busy": self.generated_total / window if window else None,
        }


def reply_text(prompt: str, tokens: int) -> str:
    filler = ["token"] * max(0, tokens - 2)
    if "5-point scale" in prompt:
        return " ".join(filler) + "\nScore: 5"
    if "rewrite the draft" in prompt or "[RES]" in prompt:
        return "[RES] " + " ".join(filler or ["token"]) + " [/RES]"
    return " ".join(filler + ["question?"])


class VLLMInstance:
    """One simulated vLLM server on its own port."""

    def __init__(self, config: VLLMConfig):
        self.config = config
        self.scheduler = Scheduler(config)

    async def start(self) -> int:
        self.loop_task = asyncio.create_task(self.scheduler.run())
        self.server = await protocol.http_server(self.route)
        return self.server.sockets[0].getsockname()[1]

    async def route(self, method: str, path: str, body: bytes) -> tuple[int, object, dict]:
        if method == "GET" and path == "/v1/models":
            return 200, protocol.model_list([protocol.model_card(MODEL, "vllm", self.config.max_model_len)]), {}
        if method == "GET" and path == "/health":
            return 200, "", {}
        if method == "GET" and path == "/metrics" and self.config.metrics:
            return 200, self.scheduler.metrics(), {"Content-Type": protocol.METRICS_CONTENT_TYPE}
        if method == "GET" and path == "/stats":
            return 200, self.scheduler.stats(), {}
        if method != "POST" or path not in (protocol.CHAT, protocol.COMPLETIONS):
            return 404, protocol.error_body("vllm", 404, f"Not Found: {method} {path}", "NotFoundError"), {}
        request = json.loads(body)
        prompt = protocol.prompt_of(path, request)
        prompt_tokens = protocol.count_tokens(prompt)
        max_tokens = request.get("max_tokens") or 1 << 20
        try:
            generated = await self.scheduler.generate(prompt_tokens, max_tokens)
        except OverflowError:
            error = protocol.error_body("vllm", 429, "Too many concurrent requests", "rate_limit_exceeded")
            return 429, error, {"Retry-After": f"{self.config.retry_after:g}"}
        text = reply_text(prompt, generated)  # the module's, looked up here (request_cache.py replaces it)
        finish = protocol.OPENAI_FINISH[protocol.finish_at(generated, max_tokens)]
        choice = protocol.chat_choice(text, finish) if path == protocol.CHAT else protocol.text_choice(text, finish)
        usage = protocol.usage(prompt_tokens, generated)
        return 200, protocol.completion(path, choice, model=MODEL, usage=usage, id="sim"), {}


async def serve(configs: list[VLLMConfig], port_file: str) -> None:
    instances = [VLLMInstance(c) for c in configs]
    ports = [await instance.start() for instance in instances]
    with open(port_file, "w") as handle:
        json.dump(ports, handle)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--speeds", default="", help="Comma-separated speed per instance (default: all 1)")
    parser.add_argument("--port-file", required=True, help="Where to write the JSON list of ports")
    for name, default in vars(VLLMConfig()).items():
        if name != "speed":
            kind = (lambda v: v.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)
            parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default)
    args = parser.parse_args()
    speeds = [float(s) for s in args.speeds.split(",")] if args.speeds else [1.0] * args.instances
    settings = {k: getattr(args, k) for k in vars(VLLMConfig()) if k != "speed"}
    asyncio.run(serve([VLLMConfig(**settings, speed=speed) for speed in speeds], args.port_file))


if __name__ == "__main__":
    main()
