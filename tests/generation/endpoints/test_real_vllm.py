"""bft against the real vLLM 0.32 (its CPU build) serving the embedded SmolLM2-135M checkpoint.

Every protocol path bft uses with vLLM, checked against the server itself rather than our model of it
(`tests/servers/tgi.py`, flavor `vllm`). The vLLM source each behaviour comes from, in its wheel:

- probe: `/v1/models` ModelCard with `max_model_len` and `owned_by: vllm` (`entrypoints/serve/engine/protocol.py`),
  `/version` (`entrypoints/serve/instrumentator/basic.py`), `/tokenize` (`entrypoints/serve/tokenize/protocol.py`);
- streamed chat and completions, usage in a last chunk (`entrypoints/openai/chat_completion/serving.py`,
  `entrypoints/openai/completion/serving.py`, `entrypoints/serve/utils/api_utils.py` should_include_usage);
- token probabilities: chat `logprobs.content[].top_logprobs`, completions `logprobs.top_logprobs`
  (`chat_completion/protocol.py`, `completion/protocol.py`);
- the context refusal (`renderers/params.py`) and the quiet `max_tokens` clamp (`serve/utils/api_utils.py`
  get_max_tokens);
- load from `/metrics` (`v1/metrics/loggers.py`: vllm:num_requests_running, vllm:num_requests_waiting,
  vllm:kv_cache_usage_perc);
- a server killed mid-run and started again; the engine's death on seeded sampling on a CPU
  (`v1/worker/gpu_model_runner.py` _bookkeeping_sync; `v1/engine/exceptions.py` EngineDeadError).

Reasoning fields are not covered here: every vLLM reasoning parser needs its think tokens in the model's
vocabulary (`reasoning/basic_parsers.py`), and SmolLM2 has none; the `vllm` flavor of our test server covers
them. Slow (one server start of 1-4 minutes for the session, one more for the restart test); part of CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from datasets import load_dataset

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.client import Endpoint
from bft.generation.endpoints.embedded import converted_checkpoint
from bft.generation.endpoints.limiter import parse_load
from bft.generation.errors import RequestRejected
from bft.generation.method.fitting import parse_context_error
from tests.paths import DEMO_CONFIG, DEMO_CORPUS
from tests.servers.real_vllm import MODEL, SESSION
from tests.servers.tgi import TGITestServer
from tests.slow import progress, run_bft

pytestmark = pytest.mark.slow


@pytest.fixture
def vllm():
    return SESSION.running()


@pytest.fixture(scope="module", autouse=True)
def stop_vllm_after_this_module():
    """The server holds a core and a few GB: the rest of the suite runs without it."""
    yield
    SESSION.stop()


def ask(coroutine_function, url: str, **endpoint_args):
    """Run `coroutine_function(endpoint)` against a probed endpoint at `url`."""

    async def main():
        endpoint = Endpoint(url, **endpoint_args)
        endpoint.reserve(16)
        try:
            await endpoint.probe()
            return await coroutine_function(endpoint)
        finally:
            await endpoint.close()

    return asyncio.run(main())


def config(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def stats(out) -> dict:
    return json.loads((out / "stats.json").read_text())


def corpus(path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return str(path)


def test_the_probe_reads_what_vllm_says_of_itself(vllm):
    async def facts(endpoint):
        chat = await endpoint.count_tokens("Hello there", "chat", None)
        raw = await endpoint.count_tokens("Hello there", "raw", None)
        return endpoint, chat, raw

    endpoint, chat, raw = ask(facts, vllm.url + "/v1")
    assert (endpoint.server_kind, endpoint.model_id, endpoint.max_total_tokens) == ("vllm", MODEL, 4096)
    assert endpoint.version == "0.32.0" and endpoint.tokenize_route
    assert raw == 2  # "Hello", " there": SmolLM2 adds no BOS
    assert chat > raw + 10  # the chat template's default system prompt and role markers


def test_a_streamed_reply_is_the_reply_the_server_sends_whole(vllm):
    greedy = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=24)

    async def both(endpoint):
        streamed = await endpoint.chat("Name three colours.", None, greedy)
        endpoint.stream = False
        whole = await endpoint.chat("Name three colours.", None, greedy)
        raw_whole = await endpoint.complete("The capital of France is", None, greedy)
        endpoint.stream = True
        raw_streamed = await endpoint.complete("The capital of France is", None, greedy)
        return streamed, whole, raw_streamed, raw_whole

    streamed, whole, raw_streamed, raw_whole = ask(both, vllm.url)
    assert streamed.text and streamed.text == whole.text
    assert (streamed.completion_tokens, streamed.prompt_tokens) == (whole.completion_tokens, whole.prompt_tokens)
    assert streamed.finish_reason == whole.finish_reason and streamed.model == MODEL
    assert raw_streamed.text == raw_whole.text and "Paris" in raw_streamed.text
    assert raw_streamed.completion_tokens == raw_whole.completion_tokens <= 24


def test_token_probabilities_come_back_on_both_routes(vllm):
    greedy = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=3)

    async def both(endpoint):
        chat = await endpoint.chat("Rate bread from 1 to 5. Answer with one digit.", None, greedy, top_n=5)
        raw = await endpoint.complete("Score (1-5):", None, greedy, top_n=5)
        return chat, raw

    chat, raw = ask(both, vllm.url)
    for reply in (chat, raw):
        assert reply.token_choices and len(reply.token_choices) == reply.completion_tokens
        first = reply.token_choices[0]
        assert len(first.top) >= 5 and all(lp <= 0 for _, lp in first.top)
        assert "".join(c.text for c in reply.token_choices) == reply.text


def test_the_demo_settings_run_on_vllm_raw_with_the_chat_template_prefills_and_expected_scores(vllm, tmp_path):
    """The demo's way for a small model (raw `/v1/completions`, the chat template applied by bft, answer
    prefills), on vLLM: without the demo's seeds (vLLM's CPU build crashes on them, the last test) and
    with each stage's tokenizer named (the chat template is applied here); curation scores from the
    token probabilities after the `Score:` prefill (`score_mode: expected`). Greedy, so that the run is
    the same each time: sampled instructions made the small model's curation replies differ from run to
    run, some with no score among their likeliest tokens."""
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    for name in ("backtranslate", "curate", "rewrite"):
        demo[name]["sampling"].pop("seed")
        demo[name]["sampling"]["temperature"] = 0.0
        demo[name]["tokenizer"] = str(converted_checkpoint())
        demo[name].pop("max_concurrency")
    demo["curate"] |= {"score_mode": "expected", "min_score": 1.0}
    c = config(tmp_path / "c.yaml", demo)
    out = tmp_path / "o"
    args = ["generate", DEMO_CORPUS, "--out", out, "--endpoint", vllm.url, "--config", c, "--limit", 4]
    result = run_bft(*args, "--no-progress", timeout=900, out=out)
    assert result.returncode == 0, result.stderr[-3000:]
    s = stats(out)
    assert s["backtranslate"]["entered"] == 4 and s["curate"]["entered"] == s["backtranslate"]["kept"] > 0
    # the rewrite's 5 stops, one more than vLLM takes: sent 4, the fifth watched by bft (no request refused)
    assert s["rewrite"]["entered"] > 0 and not any(r.startswith("input_") for r in s["rewrite"]["rejected_by_reason"])
    curated = load_dataset(str(out), "curated", split="train")
    assert all(1.0 <= score <= 5.0 for score in curated["score"])
    provenance = curated[0]["provenance"]
    assert [p["mode"] for p in provenance[:2]] == ["raw", "raw"] and provenance[1]["server"] == "vllm"
    # scored from the token probabilities vLLM sent after the prefill (had it sent none, the run would have
    # stopped: score_mode expected needs them); a confident model's sum p(k) * k may well be a whole number
    assert all(row["provenance"][1]["parse_status"] == "ok" for row in curated)


def refusal(url: str, prompt: str, max_tokens: int) -> RequestRejected:
    """What bft's client raises for `prompt` as a raw completion asking `max_tokens`."""
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=max_tokens)

    async def refused(endpoint):
        with pytest.raises(RequestRejected) as raised:
            await endpoint.complete(prompt, None, sampling)
        return raised.value

    return ask(refused, url)


def test_a_prompt_over_the_context_is_refused_in_vllm_0_32s_words(vllm):
    refused = refusal(vllm.url, "word " * 5000, 8)
    assert refused.reason == "input_too_long" and refused.parameter == "input_tokens"
    assert "However, your prompt contains at least 4097 input tokens" in refused.detail
    limit = parse_context_error(refused.detail, 8)
    assert limit.allowed_input == 4096 - 8 and limit.given_input is None  # "at least": the size is not known


def test_a_reply_vllm_cuts_short_for_room_is_refused_not_kept(vllm):
    """A prompt that fits but leaves less than max_tokens: vLLM lowers max_tokens without a word."""
    refused = refusal(vllm.url, "word " * 4000, 200)
    assert refused.reason == "input_too_long" and refused.parameter == "max_tokens"
    limit = parse_context_error(refused.detail, 200)
    assert limit.allowed_input == 4096 - 200 and limit.given_input == 4001


def test_a_run_on_vllm_counts_long_documents_first_and_cuts_them_before_sending(vllm, tmp_path):
    long = "The oven bakes bread slowly. " * 900  # ~5,400 tokens: over the context
    fits_barely = "Flour and water make dough. " * 640  # fits, but not with 256 new tokens after it
    docs = corpus(tmp_path / "c.jsonl", ["A short note on sourdough starters and how to feed them.", long, fits_barely])
    c = config(tmp_path / "c.yaml", {"stages": ["backtranslate"], "backtranslate": {"sampling": {"max_tokens": 256}}})
    out = tmp_path / "o"
    result = run_bft(
        "generate", docs, "--out", out, "--endpoint", vllm.url, "--config", c, "--no-progress", timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    s = stats(out)["backtranslate"]
    assert s["entered"] == 3 and s["truncated_to_fit"] == 2
    assert s["requests"] == 3  # counted at /tokenize and cut before sending: no refusal, no reply cut short
    assert s["retries_by_cause"] == {}


def test_a_slow_streamed_reply_is_never_abandoned_for_its_length(vllm, tmp_path):
    """request_timeout 15 s, 8 answers of 256 tokens at once (distill, asked for long essays): they take far
    longer than that on this CPU, but each streamed token keeps its request alive, so nothing times out or is
    asked twice (a deadline on a reply's length abandoned them). 15 s, not less: the real server goes quiet
    for a few seconds now and then (a new batch shape to compile), which a shorter silence takes for death."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "instruction": f"Write a long, detailed essay on baking bread, part {i}."})
            + "\n"
            for i in range(8)
        )
    )
    sampling = {"max_tokens": 256, "temperature": 1.0}
    c = config(tmp_path / "c.yaml", {"stages": ["distill"], "request_timeout": 15, "distill": {"sampling": sampling}})
    out = tmp_path / "o"
    began = time.monotonic()
    args = ["generate", prompts, "--text-field", "instruction", "--out", out, "--endpoint", vllm.url, "--config", c]
    result = run_bft(*args, "--no-progress", timeout=900)
    wall = time.monotonic() - began
    assert result.returncode == 0, result.stderr[-3000:]
    s = stats(out)["distill"]
    assert s["requests"] == 8 and s["retries_by_cause"] == {} and s["entered"] == 8
    assert wall > 2 * 15 and s["completion_tokens"] > 8 * 128  # long replies, far past request_timeout


def test_the_limit_is_steered_by_vllms_own_metrics(vllm, tmp_path):
    with urllib.request.urlopen(vllm.url + "/metrics", timeout=10) as response:
        load = parse_load(response.read().decode(), 0.0)
    assert load is not None and load.cache_use is not None  # running, waiting and KV-cache use are all read
    texts = [f"Short note {i} about rye bread and its crust." for i in range(24)]
    docs = corpus(tmp_path / "c.jsonl", texts)
    c = config(tmp_path / "c.yaml", {"stages": ["backtranslate"], "backtranslate": {"sampling": {"max_tokens": 48}}})
    out = tmp_path / "o"
    result = run_bft(
        "generate", docs, "--out", out, "--endpoint", vllm.url, "--config", c, "--no-progress", timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (limit,) = stats(out)["endpoints"].values()
    assert limit["steered_by"] == "server /metrics" and limit["limit_high"] > 8


def shape(value, key: str = ""):
    """A JSON value's structure: objects as {key: shape}, lists by their first item, scalars by type; a
    completion's `top_logprobs` entries are maps from token to logprob, so their keys are data, not fields."""
    if isinstance(value, dict) and key == "top_logprobs" and "token" not in value:  # chat: {token, logprob}
        return {"<token>": shape(next(iter(value.values()))) if value else None}
    if isinstance(value, dict):
        return {k: shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0], key)] if value else []
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__


def within(fake, real, where="") -> list[str]:
    """Where the fake's structure is not found in the real one's (a field it invents, or of another kind)."""
    if isinstance(fake, dict):
        if not isinstance(real, dict):
            return [f"{where}: an object, not {real!r}"]
        return [
            p for k, v in fake.items() for p in (within(v, real[k], f"{where}.{k}") if k in real else [f"{where}.{k}"])
        ]
    if isinstance(fake, list):
        return within(fake[0], real[0], where + "[0]") if fake and real else []
    return [] if fake == real or "NoneType" in (fake, real) else [f"{where}: {fake} vs {real}"]


def exchanges(url: str, model: str) -> dict:
    """The answers bft reads, asked of one server: models, tokenize, a refusal, a streamed chat and completion."""

    def call(route, payload=None):
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url + route, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.read().decode()
        except urllib.error.HTTPError as error:
            return error.read().decode()

    def events(text):
        return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]

    stream = {"stream": True, "stream_options": {"include_usage": True}, "max_tokens": 4, "temperature": 0.0}
    chat = events(call("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Hi"}],
                                                "logprobs": True, "top_logprobs": 2, **stream}))  # fmt: skip
    raw = events(call("/v1/completions", {"model": model, "prompt": "The sky is", "logprobs": 2, **stream}))
    return {
        "models": json.loads(call("/v1/models")),
        "tokenize": json.loads(call("/tokenize", {"model": model, "prompt": "Hello there"})),
        "too_long": json.loads(call("/v1/completions", {"model": model, "prompt": "word " * 5000, "max_tokens": 4})),
        "five_stops": json.loads(call("/v1/completions", {"model": model, "prompt": "Hi", "stop": list("abcde")})),
        "chat_first": chat[0],
        "chat_token": chat[1],
        "chat_usage": chat[-1],
        "raw_token": raw[0],
        "raw_usage": raw[-1],
    }


def test_the_test_servers_vllm_flavor_answers_as_the_real_vllm_does(vllm):
    """Each answer of `tests/servers/tgi.py` (flavor vllm) that bft reads has the real server's structure:
    no field the real one lacks, none of another kind; the refusal in the same words."""
    real = exchanges(vllm.url, MODEL)
    with TGITestServer(flavor="vllm") as fake_server:
        fake_server.max_total_tokens = 4096
        fake = exchanges(fake_server.url, "bft/test-model")
    for name in real:
        assert within(shape(fake[name]), shape(real[name]), name) == [], name
    assert fake["chat_usage"]["choices"] == [] == real["chat_usage"]["choices"]
    refusal = "This model's maximum context length is 4096 tokens. However, your prompt contains at least 4097"
    assert real["too_long"]["error"]["message"].startswith(refusal)
    assert fake["too_long"]["error"]["message"].startswith(refusal)
    assert fake["too_long"]["error"]["param"] == real["too_long"]["error"]["param"] == "input_tokens"
    # more stop strings than VLLM_MAX_STOP_STRINGS: refused by its request schema, in pydantic's words
    limit = "List should have at most 4 items after validation, not 5"
    for answer in (fake["five_stops"]["error"], real["five_stops"]["error"]):
        assert (answer["type"], answer["param"], answer["code"]) == ("Bad Request", "body.stop", 400)
        assert answer["message"].startswith("2 validation errors:") and limit in answer["message"]


def test_a_server_killed_mid_run_and_started_again_loses_nothing(vllm, tmp_path):
    texts = [f"Note {i}: proofing dough in a cold kitchen takes patience and a warm corner." for i in range(16)]
    docs = corpus(tmp_path / "c.jsonl", texts)
    settings = {
        "stages": ["backtranslate"],
        "endpoints_down_timeout": 900,
        "backtranslate": {"max_concurrency": 4, "sampling": {"max_tokens": 96}},
    }
    c = config(tmp_path / "c.yaml", settings)
    out = tmp_path / "o"
    command = [sys.executable, "-m", "bft.generation.cli", "generate", docs, "--out", str(out)]
    command += ["--endpoint", vllm.url, "--config", c, "--no-progress"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        journal = out / ".bft" / "journal" / "backtranslate.jsonl"
        deadline = time.monotonic() + 600
        while not (journal.exists() and len(journal.read_text().splitlines()) >= 2):
            assert run.poll() is None and time.monotonic() < deadline, f"no progress: {progress(out)}"
            time.sleep(0.5)
        vllm.kill()  # mid-run: requests in flight die with it
        time.sleep(5)
        SESSION.start()  # the same port; bft's probe finds it again
        stdout, stderr = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, stderr[-3000:]
    said = stdout + stderr  # the pool's messages go above the progress bars (tqdm.write: stdout)
    assert "out of rotation" in said and "answers again" in said
    s = stats(out)
    assert s["backtranslate"]["endpoint_events"] == {"removed": 1, "restored": 1}
    assert s["backtranslate"]["entered"] == 16 and s["backtranslate"]["kept"] + s["backtranslate"]["rejected"] == 16
    reasons = s["backtranslate"].get("rejected_by_reason") or {}
    assert "request_failed" not in reasons  # nothing lost to the outage
    rows = load_dataset(str(out), "backtranslated", split="train")
    assert len(set(rows["id"])) == len(rows) == s["backtranslate"]["kept"]


def test_seeded_sampling_that_kills_vllms_cpu_engine_is_named(vllm, tmp_path):
    """vLLM's CPU build dies on a seeded request prefilled in chunks; bft says so and what to change.

    Last in this module: it leaves the session's server dead (the next test to need one starts it again)."""
    long = "Rye, wheat and spelt each take water differently when a dough is mixed. " * 150  # ~2,300 tokens
    docs = corpus(tmp_path / "c.jsonl", [long, long + " Again.", "A short note on rye."])
    c = config(
        tmp_path / "c.yaml",
        {"stages": ["backtranslate"], "backtranslate": {"sampling": {"max_tokens": 16, "seed": 0}}},
    )
    out = tmp_path / "o"
    result = run_bft(
        "generate", docs, "--out", out, "--endpoint", vllm.url, "--config", c, "--no-progress", timeout=900
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "the vLLM engine at" in result.stderr and "sampling.seed 0" in result.stderr
    assert "backtranslate.sampling.seed" in result.stderr
    deadline = time.monotonic() + 60
    while "CPU Generator does not use offset" not in SESSION.log_text() and time.monotonic() < deadline:
        time.sleep(1)
    assert "CPU Generator does not use offset" in SESSION.log_text()  # the cause bft names, in vLLM's own log
