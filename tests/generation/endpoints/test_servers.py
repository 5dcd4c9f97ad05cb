"""bft against the servers people run: TGI, vLLM and SGLang test-server flavors, through bft's own client.

Every code path that parses a server's answer meets each flavor: model and limits discovery, chat and raw
replies, token probabilities, overflow refusals in each server's wording, reasoning fields, aborted
generations, `Retry-After`, refusals of a parameter, and the connection pool under load.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from datasets import load_dataset

from bft.generation.cli import main
from tests.paths import DEMO_CORPUS
from tests.servers.models import Fault, Reply, Sequence, paper_model, prompt_kind
from tests.servers.tgi import TGITestServer

FLAVORS = ["tgi", "vllm", "sglang"]


def generate(*args) -> int:
    return main(["generate", *map(str, args), "--no-progress"])


def config(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def stats(out) -> dict:
    return json.loads((out / "stats.json").read_text())


@pytest.mark.parametrize("flavor", FLAVORS)
def test_offline_flag_and_v1_urls_do_not_stop_inference(tmp_path, flavor):
    """HF_HUB_OFFLINE governs the Hub only; `http://host:port/v1/` is the same endpoint as `http://host:port`."""
    out = tmp_path / "o"
    with TGITestServer(flavor=flavor) as server:
        command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)]
        command += ["--endpoint", server.url + "/v1/", "--limit", "4", "--no-progress"]
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert {r.route for r in server.requests} == {"/v1/chat/completions"}
    assert stats(out)["rewrite"]["kept"] == 4
    provenance = load_dataset(str(out), "rewritten", split="train")[0]["provenance"][0]
    assert provenance["model_id"] == "bft/test-model" and provenance["api"] == ("tgi" if flavor == "tgi" else "openai")


@pytest.mark.parametrize("mode", ["chat", "raw"])
@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_prompt_over_the_context_is_cut_once_in_each_servers_wording(tmp_path, flavor, mode):
    corpus = tmp_path / "long.jsonl"
    words = " ".join(f"word{n}" for n in range(3000))
    corpus.write_text("".join(json.dumps({"id": f"long-{i}", "text": f"Doc {i}. {words}"}) + "\n" for i in range(3)))
    c = config(tmp_path / "c.yaml", {"backtranslate": {"mode": mode}, "stages": ["backtranslate"]})
    with TGITestServer(flavor=flavor) as server:
        server.max_total_tokens, server.max_input_tokens = 2048, 2047
        server.tokenize_route = False  # the server's refusal is all bft learns the sizes from
        assert generate(corpus, "--out", tmp_path / "o", "--endpoint", server.url, "--config", c) == 0
        sent = len(server.requests)
    s = stats(tmp_path / "o")["backtranslate"]
    # each document refused once, then cut once to the right size from the numbers in the refusal
    assert s["kept"] == 3 and s["truncated_to_fit"] == 3 and sent == 6


@pytest.mark.parametrize("mode", ["chat", "raw"])
@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_a_prompt_over_the_context_is_counted_at_the_server_and_cut_before_sending(tmp_path, flavor, mode):
    """vLLM and SGLang count a prompt's tokens at `/tokenize`: a long document is cut before its one request.
    On vLLM this is what keeps a prompt that leaves less than max_tokens from a reply cut short."""
    corpus = tmp_path / "long.jsonl"
    words = " ".join(f"word{n}" for n in range(3000))
    corpus.write_text("".join(json.dumps({"id": f"long-{i}", "text": f"Doc {i}. {words}"}) + "\n" for i in range(3)))
    c = config(tmp_path / "c.yaml", {"backtranslate": {"mode": mode}, "stages": ["backtranslate"]})
    with TGITestServer(flavor=flavor) as server:
        server.max_total_tokens = 2048
        assert generate(corpus, "--out", tmp_path / "o", "--endpoint", server.url, "--config", c) == 0
        sent, counted = len(server.requests), len(server.tokenized)
        longest = max(len(r.prompt.split()) for r in server.requests)
    s = stats(tmp_path / "o")["backtranslate"]
    assert s["kept"] == 3 and s["truncated_to_fit"] == 3 and sent == 3 and counted >= 6
    assert longest + 256 <= 2048  # the cut prompt leaves the stage's max_tokens


def test_a_reply_vllm_cut_short_for_room_is_not_taken_for_the_models_own(tmp_path):
    """vLLM serves a prompt that leaves less than max_tokens with max_tokens lowered (finish_reason length);
    where bft could not count first, that reply is read as a prompt too long, and the document is cut."""
    corpus = tmp_path / "long.jsonl"
    words = " ".join(f"word{n}" for n in range(1900))
    corpus.write_text(json.dumps({"id": "long", "text": f"Doc. {words}"}) + "\n")
    c = config(tmp_path / "c.yaml", {"backtranslate": {"mode": "raw"}, "stages": ["backtranslate"]})
    long_reply = Reply(" ".join(["More"] * 400))  # the model would go on past the room left
    with TGITestServer(lambda r: long_reply, flavor="vllm") as server:
        server.max_total_tokens, server.tokenize_route = 2048, False
        assert generate(corpus, "--out", tmp_path / "o", "--endpoint", server.url, "--config", c) == 0
        served = [len(r.prompt.split()) for r in server.requests]
    s = stats(tmp_path / "o")["backtranslate"]
    assert s["truncated_to_fit"] == 1 and len(served) == 2 and served[1] + 256 <= 2048


@pytest.mark.parametrize("route", ["chat", "raw"])
@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_expected_scores_from_token_probabilities(tmp_path, flavor, route):
    def scorer(request):
        if prompt_kind(request.prompt) == "curate":
            return Reply("Good.\nScore: 5", top={"5": {"5": 0.6, "4": 0.4}})
        return paper_model(request)

    c = config(
        tmp_path / "c.yaml", {"curate": {"mode": route, "score_mode": "expected"}, "backtranslate": {"mode": route}}
    )
    with TGITestServer(scorer, flavor=flavor) as server:
        out = tmp_path / "o"
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 3, "--config", c) == 0
    rows = load_dataset(str(out), "curated", split="train")
    assert rows[0]["expected_score"] == pytest.approx(4.6)


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_reasoning_is_kept_apart_and_never_parsed(tmp_path, flavor):
    def thinker(request):
        kind = prompt_kind(request.prompt)
        if kind == "curate":  # a score inside the reasoning must not count
            return Reply("Fine.\nScore: 2", reasoning="Maybe this deserves Score: 5 ... no.")
        if kind == "rewrite":  # inline thinking with a fake block inside
            return Reply("<think>I could write [RES] a guess [/RES] first.</think>[RES] The real answer. [/RES]")
        return paper_model(request)

    c = config(tmp_path / "c.yaml", {"curate": {"min_score": 2}})
    with TGITestServer(thinker, flavor=flavor) as server:
        out = tmp_path / "o"
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 2, "--config", c) == 0
    row = load_dataset(str(out), "rewritten", split="train")[0]
    assert row["score"] == 2 and row["response"] == "The real answer."
    curate, rewrite = row["provenance"][1], row["provenance"][2]
    assert curate["reasoning"] == "Maybe this deserves Score: 5 ... no."
    assert rewrite["reasoning"] == "I could write [RES] a guess [/RES] first."


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_an_aborted_generation_is_retried_not_kept(tmp_path, flavor):
    aborted = Sequence([Reply("partial", finish="abort")], when=lambda r: prompt_kind(r.prompt) == "backtranslate")
    c = config(tmp_path / "c.yaml", {"stages": ["backtranslate"]})
    with TGITestServer(aborted, flavor=flavor) as server:
        out = tmp_path / "o"
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 1, "--config", c) == 0
    s = stats(out)["backtranslate"]
    assert s["kept"] == 1 and s["retries_by_cause"] == {"finish_abort": 1}
    assert load_dataset(str(out), "backtranslated", split="train")[0]["instruction"] != "partial"


def test_retry_after_is_honoured(tmp_path):
    limited = Sequence([Fault(429, "Rate limited", "overloaded", retry_after=1.5)])
    c = config(tmp_path / "c.yaml", {"stages": ["backtranslate"]})
    with TGITestServer(limited, flavor="vllm") as server:
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--limit", 1, "--config", c) == 0
        )
        first, second = server.request_times[:2]
    assert second - first >= 1.4  # the server's window, not a 0.5 s backoff


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_parameter_every_request_meets_stops_the_run_with_one_message(tmp_path, flavor, capsys):
    refuse = Fault(400, "`seed` is not supported by this deployment", "BadRequestError")
    with TGITestServer(lambda r: refuse, flavor=flavor) as server:
        code = generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--max-concurrency", 1)
        sent = len(server.requests)
    assert code == 2 and sent <= 4
    err = capsys.readouterr().err
    assert "refused 3 documents of stage backtranslate in a row for the same reason" in err and "seed" in err


def test_tgi_chat_refuses_top_p_1_and_bft_does_not_send_it(tmp_path):
    c = config(tmp_path / "c.yaml", {"backtranslate": {"sampling": {"top_p": 1.0}}, "stages": ["backtranslate"]})
    with TGITestServer() as server:
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--limit", 2, "--config", c) == 0
        )
        assert all("top_p" not in r.payload for r in server.requests)
    assert stats(tmp_path / "o")["backtranslate"]["kept"] == 2


def test_tgi_prompt_tokens_are_counted_from_its_header(tmp_path):
    c = config(tmp_path / "c.yaml", {"backtranslate": {"mode": "raw"}, "stages": ["backtranslate"]})
    with TGITestServer() as server:
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--limit", 2, "--config", c) == 0
        )
    assert stats(tmp_path / "o")["backtranslate"]["prompt_tokens"] > 100


def test_top_n_tokens_over_tgis_limit_is_refused_before_the_run(tmp_path, capsys):
    c = config(tmp_path / "c.yaml", {"curate": {"score_mode": "expected", "top_n_tokens": 10}})
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--config", c) == 2
        assert server.requests == []
    assert "at most 5 top_n_tokens" in capsys.readouterr().err


def test_150_requests_in_flight_keep_150_connections(tmp_path):
    corpus = tmp_path / "many.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Note {i} about bread."}) + "\n" for i in range(200)))
    c = config(tmp_path / "c.yaml", {"stages": ["backtranslate"]})

    def slow(request):
        time.sleep(1.0)
        return paper_model(request)

    with TGITestServer(slow, flavor="vllm") as server:
        args = [corpus, "--out", tmp_path / "o", "--endpoint", server.url, "--config", c, "--max-concurrency", 150]
        assert generate(*args) == 0
        peak = server.peak_in_flight
    assert peak == 150
