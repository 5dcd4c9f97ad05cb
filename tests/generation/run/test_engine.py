"""The generation engine under load and faults: concurrency, endpoints, context overflow, scores, secrets."""

import json
import re
import threading
import time

import pytest
import yaml
from datasets import load_dataset

from bft.generation.cli import main
from bft.generation.corpus.documents import read_corpus
from tests.paths import DEMO_CORPUS
from tests.servers.models import Fault, Reply, Sequence, paper_model, picky_model, prompt_kind, slow
from tests.servers.tgi import TGITestServer

DEMO_DOCS = list(read_corpus(str(DEMO_CORPUS)))
DEMO_IDS = [d.id for d in DEMO_DOCS]


def generate(*args) -> int:
    return main(["generate", *map(str, args), "--no-progress"])


def load(out, config):
    return load_dataset(str(out), config, split="train")


def config_file(tmp_path, data) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def stats_of(out) -> dict:
    return json.loads((out / "stats.json").read_text())


# -- concurrency ------------------------------------------------------------------------------------


def test_requests_in_flight_default_to_tgi_max_concurrent_requests(tmp_path):
    with TGITestServer(slow(0.05)) as server:
        server.max_concurrent_requests = 3
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--stages", "backtranslate") == 0
        )
        assert server.peak_in_flight == 3  # TGI's /info limit, reached and never exceeded


def test_requests_in_flight_without_info_use_the_flag(tmp_path):
    with TGITestServer(slow(0.05), tgi_info=False) as server:
        args = ("--out", tmp_path / "o", "--endpoint", server.url, "--stages", "backtranslate", "--max-concurrency", 5)
        assert generate(DEMO_CORPUS, *args) == 0
        assert server.peak_in_flight == 5


def test_replicas_share_the_work_by_outstanding_requests(tmp_path):
    with TGITestServer(slow(0.01)) as fast, TGITestServer(slow(0.2)) as slow_server:
        args = ("--endpoint", fast.url, "--endpoint", slow_server.url, "--max-concurrency", 2)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", *args) == 0
        assert len(slow_server.requests) > 0
        assert len(fast.requests) > 2 * len(slow_server.requests)  # the fast replica takes more, none waits
        assert len(fast.requests) + len(slow_server.requests) == 3 * len(DEMO_IDS)
    assert sorted(load(tmp_path / "o", "rewritten")["id"]) == sorted(DEMO_IDS)


def test_each_stage_on_its_own_endpoint(tmp_path):
    with TGITestServer(model_id="org/backward") as backward, TGITestServer(model_id="org/aligned") as aligned:
        stage_args = (
            f"backtranslate={backward.url}",
            f"curate={aligned.url}",
            f"rewrite={aligned.url}",
        )
        args = [a for s in stage_args for a in ("--stage-endpoint", s)]
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", *args, "--limit", 4) == 0
        assert {prompt_kind(r.prompt) for r in backward.requests} == {"backtranslate"}
        assert {prompt_kind(r.prompt) for r in aligned.requests} == {"curate", "rewrite"}
    row = load(tmp_path / "o", "rewritten")[0]
    assert [p["model_id"] for p in row["provenance"]] == ["org/backward", "org/aligned", "org/aligned"]


def test_stages_in_turn_on_one_server_resume_from_the_earlier_stage(tmp_path):
    out = tmp_path / "o"
    with TGITestServer(model_id="org/backward") as server:
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--stages", "backtranslate") == 0
    with TGITestServer(model_id="org/aligned") as server:  # the same GPU, now serving the aligned model
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url) == 0
        assert {prompt_kind(r.prompt) for r in server.requests} == {"curate", "rewrite"}
    rows = load(out, "rewritten")
    assert sorted(rows["id"]) == sorted(DEMO_IDS)
    assert [p["model_id"] for p in rows[0]["provenance"]] == ["org/backward", "org/aligned", "org/aligned"]


# -- faults ------------------------------------------------------------------------------------------


def test_timeouts_and_malformed_bodies_are_retried(tmp_path):
    script = Sequence([Reply("too late", delay=3.0), Fault(200, body="{not json"), Fault(200, body='{"choices": []}')])
    with TGITestServer(script) as server:
        config = config_file(tmp_path, {"request_timeout": 1.0})
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--config", config, "--limit", 1)
            == 0
        )
    retries = stats_of(tmp_path / "o")["backtranslate"]["retries_by_cause"]
    assert retries == {"malformed_response": 2, "timeout": 1}
    assert len(load(tmp_path / "o", "rewritten")) == 1


def test_a_document_over_the_context_is_cut_to_fit_and_retried_once(tmp_path):
    long_doc = {"id": "long", "text": " ".join(f"word{i}" for i in range(3000))}
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps(long_doc) + "\n" + json.dumps({"id": "short", "text": "A short text. " * 20}) + "\n")
    with TGITestServer() as server:
        server.max_total_tokens = 2048  # words; backtranslate asks 256 new tokens
        assert generate(corpus, "--out", tmp_path / "o", "--endpoint", server.url, "--stages", "backtranslate") == 0
        sent = [len(r.prompt.split()) for r in server.requests if "word2999" in r.prompt or "word0 " in r.prompt]
    assert sent[0] > 2048 - 256 and sent[1] <= 2048 - 256  # refused once, then fits
    rows = load(tmp_path / "o", "backtranslated")
    long_row = rows.filter(lambda r: r["id"] == "long")[0]
    assert long_row["response"] == long_row["document"]  # the pair is built on the text the model saw
    assert long_doc["text"].startswith(long_row["document"]) and len(long_row["document"].split()) < 2048 - 256
    assert long_row["flags"][0].startswith("truncated_to_fit:backtranslate:")
    assert long_row["provenance"][0]["attempts"] == 2
    assert stats_of(tmp_path / "o")["backtranslate"]["truncated_to_fit"] == 1


def test_a_document_still_too_long_after_cutting_is_rejected_with_the_reason(tmp_path):
    refusal = Fault(422, "Input validation error: `inputs` must have less than 4096 tokens. Given: 4100", "validation")
    with TGITestServer(lambda r: refusal) as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--limit", 1) == 0
        assert len(server.requests) == 2  # the original and one cut retry, no more
    row = load(tmp_path / "o", "rejected")[0]
    assert (
        row["reason"] == "input_too_long" and "after cutting the document to fit" in row["provenance"][-1]["raw_output"]
    )


def test_cutting_can_be_switched_off(tmp_path):
    with TGITestServer() as server:
        server.max_total_tokens = 300
        config = config_file(tmp_path, {"truncate_to_fit": False})
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--config", config) == 0
    stats = stats_of(tmp_path / "o")
    assert stats["backtranslate"]["rejected_by_reason"] == {"input_too_long": 30}
    assert stats["backtranslate"]["requests"] == 30


# -- endpoints that die ----------------------------------------------------------------------------------


def test_a_replica_that_dies_mid_run_leaves_the_rotation_and_the_run_finishes(tmp_path):
    with TGITestServer(slow(0.02)) as doomed, TGITestServer(slow(0.02)) as survivor:

        def kill_after_some_requests():
            while len(doomed.requests) < 10:
                time.sleep(0.005)
            doomed.down = True

        threading.Thread(target=kill_after_some_requests, daemon=True).start()
        config = config_file(tmp_path, {"probe_interval": 30})
        args = ("--endpoint", doomed.url, "--endpoint", survivor.url, "--max-concurrency", 2, "--config", config)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", *args) == 0
    stats = stats_of(tmp_path / "o")
    assert sum(stats[s]["endpoint_events"].get("removed", 0) for s in ("backtranslate", "curate", "rewrite")) >= 1
    assert sorted(load(tmp_path / "o", "rewritten")["id"]) == sorted(DEMO_IDS)  # nothing lost


def test_a_dead_endpoint_is_probed_back_into_rotation(tmp_path):
    with TGITestServer() as server:
        server.down = True
        threading.Timer(1.5, lambda: setattr(server, "down", False)).start()
        config = config_file(tmp_path, {"probe_interval": 0.2, "max_retries": 8})
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--config", config, "--limit", 3)
            == 2
        )
        # /info refused too: a server down at the start is an error at once
    with TGITestServer(slow(0.01)) as server:
        script = server.script

        def goes_down_then_back(request):
            if len(server.requests) == 2 and not hasattr(server, "went_down"):
                server.went_down = True
                server.down = True
                threading.Timer(1.0, lambda: setattr(server, "down", False)).start()
            return script(request)

        server.script = goes_down_then_back
        config = config_file(tmp_path, {"probe_interval": 0.2, "max_retries": 8})
        args = ("--endpoint", server.url, "--config", config, "--limit", 5, "--max-concurrency", 1)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o2", *args) == 0
    stats = stats_of(tmp_path / "o2")
    events = {k: v for s in ("backtranslate", "curate", "rewrite") for k, v in stats[s]["endpoint_events"].items()}
    assert events == {"removed": 1, "restored": 1}
    assert len(load(tmp_path / "o2", "rewritten")) == 5  # nothing rejected while the server was away


def test_no_live_endpoint_stops_the_run_instead_of_hanging(tmp_path, capsys):
    with TGITestServer() as server:
        script = server.script

        def dies(request):
            server.down = True
            return script(request)

        server.script = dies
        config = config_file(tmp_path, {"probe_interval": 0.2, "endpoints_down_timeout": 1.0, "max_retries": 50})
        started = time.monotonic()
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--config", config) == 2
        assert time.monotonic() - started < 30
    assert "no endpoint has answered for 1 s" in capsys.readouterr().err


# -- scores from probabilities ---------------------------------------------------------------------------


def scored_model(request):
    """Writes "Score: 5" every time, but is only sure of it for the sourdough document."""
    if prompt_kind(request.prompt) == "curate":
        if "sourdough" in request.prompt:
            return Reply("Clear and complete.\nScore: 5", top={"5": {"5": 0.6, "4": 0.3, "3": 0.1}})
        return Reply("Clear and complete.\nScore: 5", top={"5": {"5": 0.2, "4": 0.8}})
    return paper_model(request)


@pytest.mark.parametrize("mode", ["chat", "raw"])
def test_expected_score_is_recorded_and_can_decide(tmp_path, mode):
    curate = {"mode": mode, "score_mode": "expected"}
    config = config_file(tmp_path, {"curate": curate, "backtranslate": {"mode": mode}, "rewrite": {"mode": mode}})
    with TGITestServer(scored_model) as server:
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--config", config, "--limit", 3)
            == 0
        )
        curate_requests = [r for r in server.requests if prompt_kind(r.prompt) == "curate"]
        if mode == "chat":
            assert all(r.payload["logprobs"] is True and r.payload["top_logprobs"] == 5 for r in curate_requests)
        else:
            assert all(r.payload["parameters"]["top_n_tokens"] == 5 for r in curate_requests)
    curated = load(tmp_path / "o", "curated")
    assert len(curated) == 1 and curated[0]["expected_score"] == pytest.approx(4.5)  # 0.6*5 + 0.3*4 + 0.1*3
    rejected = load(tmp_path / "o", "rejected")
    assert set(rejected["reason"]) == {"score_below_threshold"}
    assert all(r["score"] == 5 and r["expected_score"] == pytest.approx(4.2) for r in rejected)


def test_parsed_mode_still_records_the_expected_score_when_offered(tmp_path):
    with TGITestServer(scored_model) as server:
        args = ("--endpoint", server.url, "--limit", 3, "--score-mode", "expected", "--min-score", 4.0)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", *args) == 0
    assert len(load(tmp_path / "o", "curated")) == 3  # 4.5 and 4.2 both clear 4.0


def test_expected_mode_on_a_server_without_probabilities_stops_with_a_clear_message(tmp_path, capsys):
    config = config_file(tmp_path, {"curate": {"mode": "raw", "score_mode": "expected"}})
    with TGITestServer(tgi_info=False) as server:  # /v1/completions as TGI serves it: no top logprobs
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--config", config) == 2
    assert "returned no token probabilities" in capsys.readouterr().err


# -- observability and secrets ---------------------------------------------------------------------------


def final_bars(err: str) -> dict[str, dict]:
    """Each stage's last bar state in tqdm's output: done, total, percent and the postfix figures."""
    bars = {}
    for match in re.finditer(r"\s*(\w+): +(\d+)%\|[^|]*\| (\d+)/(\d+) \[[^\]]*?(?:, ([^\]]*))?\]", err):
        name, percent, done, total, postfix = match.groups()
        figures = dict(part.split("=", 1) for part in (postfix or "").split(", ") if "=" in part)
        bars[name] = {"percent": int(percent), "done": int(done), "total": int(total), **figures}
    return bars


def test_the_final_bars_end_at_100_percent_with_the_figures_of_stats_json(tmp_path, capsys):
    """Curation rejects some pairs and the server fails a few requests: every bar still ends full, its
    total the documents that entered its stage, its retries, rejects and tokens/s those of stats.json."""
    flaky = Sequence([Fault(503, "busy", "overloaded")] * 3, then=picky_model)
    with TGITestServer(flaky) as server:
        assert main(["generate", str(DEMO_CORPUS), "--out", str(tmp_path / "o"), "--endpoint", server.url]) == 0
    bars, stats = final_bars(capsys.readouterr().err), stats_of(tmp_path / "o")
    assert set(bars) == {"prepare", "backtranslate", "curate", "rewrite"}
    assert stats["curate"]["rejected"] > 0 and stats["rewrite"]["entered"] < stats["prepare"]["entered"]
    for name, bar in bars.items():
        counts = stats[name]
        assert bar["percent"] == 100 and bar["done"] == bar["total"] == counts["entered"], (name, bar)
        assert int(bar["rejected"]) == counts["rejected"] and int(bar["retries"]) == sum(
            counts["retries_by_cause"].values()
        )
        if counts["completion_tokens_per_second"]:
            assert int(bar["tok/s"]) == round(counts["completion_tokens_per_second"])
    assert sum(int(bar["retries"]) for bar in bars.values()) == 3


def test_a_slow_server_is_named_on_the_bar():
    from bft.generation.run.stats import StageStats

    stats = StageStats()
    stats.answered_in(2.0)
    assert "slow" not in stats.progress_postfix()
    for _ in range(20):
        stats.answered_in(40.0)
    assert stats.progress_postfix()["slow"] == "server answering in 40 s"


def test_stats_report_requests_tokens_and_throughput(tmp_path, tgi):
    assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", tgi.url, "--limit", 4) == 0
    stage = stats_of(tmp_path / "o")["curate"]
    assert stage["requests"] == 4 and stage["prompt_tokens"] > 0 and stage["completion_tokens"] > 0
    assert stage["seconds"] > 0 and stage["requests_per_second"] > 0 and stage["completion_tokens_per_second"] > 0


def test_no_file_or_log_holds_the_token(tmp_path, monkeypatch, capsys, request_cache):
    secret = "hf_SECRETtokenNEVERwritten123"
    monkeypatch.setenv("HF_TOKEN", secret)
    always_401 = Sequence([], then=lambda r: Fault(401, "Unauthorized", "authentication"))
    with TGITestServer() as server:
        assert main(["generate", str(DEMO_CORPUS), "--out", str(tmp_path / "o"), "--endpoint", server.url]) == 0
        assert server.requests[0].headers["authorization"] == f"Bearer {secret}"  # it is sent, and only sent
    with TGITestServer(always_401) as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o2", "--endpoint", server.url, "--no-cache") == 2
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    assert any(request_cache.rglob("*.jsonl"))  # the request cache holds the replies, not the token
    for path in [*tmp_path.rglob("*"), *request_cache.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_credentials_in_endpoint_urls_are_redacted():
    from bft.generation.endpoints.transport import redact_url

    assert (
        redact_url("https://user:pw@tgi.example.com:8080/v1?api_key=abc")
        == "https://***@tgi.example.com:8080/v1?api_key=***"
    )
    assert redact_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


# -- Humpback's iteration --------------------------------------------------------------------------------


def test_a_later_round_re_scores_the_same_pool_without_regenerating_instructions(tmp_path):
    pool, round2 = tmp_path / "round1", tmp_path / "round2"
    with TGITestServer(model_id="org/m0") as m0:
        args = ("--out", pool, "--endpoint", m0.url, "--stages", "backtranslate,curate", "--limit", 6)
        assert generate(DEMO_CORPUS, *args) == 0

    def stricter(request):  # M_1 scores the first three documents 3, the rest 5
        if any(d.text in request.prompt for d in DEMO_DOCS[:3]):
            return Reply("Not quite an AI assistant's answer.\nScore: 3")
        return paper_model(request)

    with TGITestServer(stricter, model_id="org/m1") as m1:
        assert generate(pool, "--out", round2, "--endpoint", m1.url, "--stages", "curate") == 0
        assert {prompt_kind(r.prompt) for r in m1.requests} == {"curate"}  # no instruction is generated again
        assert len(m1.requests) == 6
    first, second = load(pool, "backtranslated"), load(round2, "curated")
    assert sorted(second["id"]) == sorted(DEMO_IDS[3:6])
    instructions = {r["id"]: r["instruction"] for r in first}
    for row in second:
        assert row["instruction"] == instructions[row["id"]] and row["score"] == 5
        assert "previous_score:5" in row["flags"]  # the earlier round's score, side by side
        assert [p["model_id"] for p in row["provenance"]] == ["org/m0", "org/m1"]
    rejected = load(round2, "rejected")
    assert sorted(rejected["id"]) == sorted(DEMO_IDS[:3]) and set(rejected["score"]) == {3}


def test_a_later_round_scores_by_the_pools_rule_and_the_command_line_endpoint_wins(tmp_path, capsys):
    """Round 2 without a config scores as round 1 did (expected score >= 4.5, raw prompts), and the
    --endpoint given for it replaces the stage endpoint round 1's config named."""
    import yaml

    pool, round2 = tmp_path / "round1", tmp_path / "round2"
    config = tmp_path / "humpback.yaml"
    curate = {"mode": "raw", "score_mode": "expected", "min_score": 4.5, "endpoints": ["http://127.0.0.1:9"]}
    config.write_text(yaml.safe_dump({"stages": ["backtranslate", "curate"], "curate": curate}))

    def scorer(request):
        if prompt_kind(request.prompt) == "curate":
            return Reply("Score: 5", top={"5": {"5": 0.6, "4": 0.4}})
        return paper_model(request)

    with TGITestServer(scorer) as m0:
        args = ("--out", pool, "--endpoint", m0.url, "--config", config, "--limit", 3)
        assert generate(DEMO_CORPUS, *args) == 0  # the config's curate endpoint (port 9) was replaced
    with TGITestServer(scorer, model_id="org/m1") as m1:
        assert generate(pool, "--out", round2, "--endpoint", m1.url, "--stages", "curate") == 0
        assert {r.route for r in m1.requests if prompt_kind(r.prompt) == "curate"} == {"/generate"}  # raw, as round 1
    assert "scoring the pool by its own rule" in capsys.readouterr().err
    rows = load(round2, "curated")
    assert len(rows) == 3 and all(r["expected_score"] == pytest.approx(4.6) for r in rows)


def test_a_curate_first_run_needs_a_pool(tmp_path, tgi, capsys):
    assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", tgi.url, "--stages", "curate") == 2
    assert "a run that starts with curate re-scores the instruction pool" in capsys.readouterr().err


def test_distilling_answers_the_curated_instructions_without_the_documents(tmp_path):
    first, distilled = tmp_path / "round1", tmp_path / "distilled"
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", first, "--endpoint", server.url, "--limit", 4) == 0
    with TGITestServer(lambda r: Reply("A direct answer from the model's own knowledge.")) as chat_model:
        assert generate(first, "--out", distilled, "--endpoint", chat_model.url, "--stages", "distill") == 0
        curated = load(first, "curated")
        sent = sorted(json.dumps(r.payload["messages"]) for r in chat_model.requests)  # requests run concurrently
        assert sent == sorted(json.dumps([{"role": "user", "content": row["instruction"]}]) for row in curated)
    rows = load(distilled, "distilled")
    assert list(rows["id"]) == list(curated["id"]) and set(rows["response"]) == {
        "A direct answer from the model's own knowledge."
    }
    assert [p["stage"] for p in rows[0]["provenance"]] == ["backtranslate", "curate", "distill"]
    assert main(["build", str(distilled), "--out", str(tmp_path / "ds"), "--license", "mit"]) == 0
    assert len(load(tmp_path / "ds", "distilled")) == 4


def test_any_instruction_set_is_distilled_by_one_teacher_and_nothing_is_lost(tmp_path, capsys):
    alpaca = tmp_path / "alpaca.jsonl"
    rows = [{"instruction": "Name three primary colours.", "input": "", "output": "Red, blue, yellow."},
            {"instruction": "   ", "output": "nothing asked"},
            {"instruction": "Explain what a hash function does."}]  # fmt: skip
    alpaca.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "distilled"
    with TGITestServer(lambda r: Reply("The teacher's answer.")) as teacher:
        args = ("--out", out, "--endpoint", teacher.url, "--stages", "distill", "--text-field", "instruction")
        assert generate(alpaca, *args) == 0
        asked = sorted(r.payload["messages"][0]["content"] for r in teacher.requests)
    assert asked == ["Explain what a hash function does.", "Name three primary colours."]
    distilled = load(out, "distilled")
    assert sorted(distilled["instruction"]) == asked and set(distilled["response"]) == {"The teacher's answer."}
    assert set(distilled["document"]) == {""} and [p["stage"] for p in distilled[0]["provenance"]] == ["distill"]
    rejected = load(out, "rejected")
    assert list(rejected["reason"]) == ["empty_text"] and rejected[0]["input_location"].endswith("alpaca.jsonl:2")
    # without --text-field the instruction column is not found, and the run says which fields there are
    with TGITestServer() as teacher:
        assert generate(alpaca, "--out", tmp_path / "o2", "--endpoint", teacher.url, "--stages", "distill") == 1
        assert not teacher.requests
    assert "is --text-field right? (the first record's fields: input, instruction, output)" in capsys.readouterr().err


def test_distill_runs_alone(tmp_path, tgi, capsys):
    args = ("--out", tmp_path / "o", "--endpoint", tgi.url, "--stages", "backtranslate,curate,distill")
    assert generate(DEMO_CORPUS, *args) == 2
    assert "distill runs alone" in capsys.readouterr().err


def test_several_scoring_samples_are_averaged(tmp_path):
    scores = {}

    def hesitant(request):  # scores 5, 4, 5, 4, ... for each pair in turn
        if prompt_kind(request.prompt) != "curate":
            return paper_model(request)
        key = request.prompt
        scores[key] = scores.get(key, 0) + 1
        return Reply(f"Reasonable.\nScore: {5 if scores[key] % 2 else 4}")

    config = config_file(tmp_path, {"curate": {"samples": 2, "min_score": 4.5}})
    with TGITestServer(hesitant) as server:
        args = ("--out", tmp_path / "o", "--endpoint", server.url, "--config", config, "--limit", 3)
        assert generate(DEMO_CORPUS, *args, "--stages", "backtranslate,curate", "--max-concurrency", 1) == 0
        assert sum(prompt_kind(r.prompt) == "curate" for r in server.requests) == 6  # two per pair
    curated = load(tmp_path / "o", "curated")
    assert len(curated) == 3 and set(curated["mean_score"]) == {4.5}  # (5 + 4) / 2 clears 4.5
    assert [p["stage"] for p in curated[0]["provenance"]] == ["backtranslate", "curate", "curate"]
    assert sorted(p["raw_output"][-1] for p in curated[0]["provenance"][1:]) == ["4", "5"]
