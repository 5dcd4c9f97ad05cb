"""The request cache through whole runs: an edited config asks only what it changed, and the rows are a fresh run's.

Each test has its own cache folder (`tests/conftest.py` sets `$BFT_REQUEST_CACHE`); the servers are the TGI
test server in its flavors, deterministic unless a test says otherwise.
"""

import json
import random
import signal
import subprocess
import sys
import time
import types

import pytest
import yaml
from datasets import load_dataset

from bft.generation.cli import main
from bft.generation.config import SamplingConfig
from bft.generation.errors import RequestRejected
from bft.generation.method.prompts import PROMPT_DIR
from bft.generation.method.stages import Request
from bft.generation.run.cached_replies import ReplyCache, request_key, sampling_key
from bft.generation.run.request_cache import RequestCache, cache_info
from bft.generation.run.stats import StageStats
from tests.paths import DEMO_CORPUS
from tests.servers.models import Reply, paper_model, prompt_kind
from tests.servers.protocol import too_many_stops
from tests.servers.tgi import TGITestServer

CACHE_FIELDS = ("cached", "first_asked_at", "first_asked_endpoint", "first_asked_run")
CONFIGS = ("backtranslated", "curated", "rewritten", "rejected")


def generate(*args) -> int:
    return main(["generate", *map(str, args), "--no-progress"])


def config_file(tmp_path, data, name="config.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def stats_of(out) -> dict:
    return json.loads((out / "stats.json").read_text())


def rows(out, config: str) -> list[dict]:
    """A config's rows by id, without the provenance fields that say where a reply came from."""
    if not (out / config).is_dir():
        return []
    found = []
    for row in load_dataset(str(out), config, split="train"):
        row["provenance"] = [{k: v for k, v in p.items() if k not in CACHE_FIELDS} for p in row["provenance"]]
        found.append(row)
    return sorted(found, key=lambda row: (row["id"], row["stage"]))


def same_rows(one, other) -> None:
    for config in CONFIGS:
        assert rows(one, config) == rows(other, config), config


def kinds(requests) -> dict[str, int]:
    counted: dict[str, int] = {}
    for request in requests:
        counted[prompt_kind(request.prompt)] = counted.get(prompt_kind(request.prompt), 0) + 1
    return counted


def scored_by_document(request):
    """paper_model, with a score from 2 to 5 that depends on the pair (so a threshold matters)."""
    if prompt_kind(request.prompt) == "curate":
        return Reply(f"Judged.\nScore: {2 + sum(map(ord, request.prompt)) % 4}")
    return paper_model(request)


def test_a_rerun_into_a_new_folder_asks_nothing_and_writes_the_same_rows(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", first, "--endpoint", server.url, "--limit", 6) == 0
        asked = len(server.requests)
        assert generate(DEMO_CORPUS, "--out", second, "--endpoint", server.url, "--limit", 6) == 0
        assert len(server.requests) == asked == 18
    same_rows(first, second)
    for stage in ("backtranslate", "curate", "rewrite"):
        before, after = stats_of(first)[stage], stats_of(second)[stage]
        assert (before["requests"], before["cache_hits"], before["cache_misses"]) == (6, 0, 6)
        assert (after["requests"], after["cache_hits"], after["cache_misses"]) == (0, 6, 0)
    provenance = load_dataset(str(second), "rewritten", split="train")[0]["provenance"]
    assert all(p["cached"] is True for p in provenance)
    assert all(
        p["first_asked_endpoint"] == server.url and p["first_asked_run"] == str(first.resolve()) for p in provenance
    )
    assert all(p["first_asked_at"].endswith("Z") for p in provenance)
    assert {p["cached"] for p in load_dataset(str(first), "rewritten", split="train")[0]["provenance"]} == {None}


def test_a_changed_threshold_asks_nothing_and_gives_a_fresh_runs_rows(tmp_path):
    with TGITestServer(scored_by_document) as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", "--endpoint", server.url, "--limit", 12) == 0
        asked = len(server.requests)
        args = ("--endpoint", server.url, "--limit", 12, "--min-score", 3)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "b", *args) == 0
        lowered = kinds(server.requests[asked:])
        asked = len(server.requests)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "raised", *args[:-1], 5) == 0
        assert len(server.requests) == asked  # a threshold raised: every reply it needs is stored
        assert generate(DEMO_CORPUS, "--out", tmp_path / "fresh", *args, "--no-cache") == 0
        assert len(server.requests) - asked == 24 + stats_of(tmp_path / "b")["rewrite"]["entered"]  # everything
    newly_kept = stats_of(tmp_path / "b")["curate"]["kept"] - stats_of(tmp_path / "a")["curate"]["kept"]
    assert newly_kept > 0 and lowered == {"rewrite": newly_kept}  # judged again; only the pairs let through asked
    same_rows(tmp_path / "b", tmp_path / "fresh")
    same_rows(tmp_path / "raised", tmp_path / "a")


def test_no_cache_stores_nothing(tmp_path, request_cache):
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", "--endpoint", server.url, "--limit", 2, "--no-cache") == 0
    assert cache_info(request_cache).entries == 0


def test_a_changed_prompt_asks_only_its_stage_again(tmp_path):
    text = (PROMPT_DIR / "rewrite.txt").read_text(encoding="utf-8")
    assert "Try not to add new facts" in text
    edited = tmp_path / "my_rewrite.txt"
    edited.write_text(text.replace("Try not to add new facts", "Add no new facts"), encoding="utf-8")
    config = config_file(tmp_path, {"rewrite": {"template": str(edited)}})
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", "--endpoint", server.url, "--limit", 5) == 0
        before = len(server.requests)
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "b", "--endpoint", server.url, "--limit", 5, "--config", config)
            == 0
        )
        assert kinds(server.requests[before:]) == {"rewrite": 5}
    assert stats_of(tmp_path / "b")["rewrite"]["requests"] == 5


def test_changed_sampling_asks_its_stage_and_only_the_documents_whose_input_changed(tmp_path):
    def instruction_by_length(request):  # backtranslation's reply depends on max_tokens for some documents
        if prompt_kind(request.prompt) == "backtranslate":
            max_tokens = request.payload["max_tokens"]
            words = request.prompt.split()
            return Reply(f"What is {words[-20] if max_tokens > 200 and len(words) % 2 else 'this about'}?")
        return paper_model(request)

    config = config_file(tmp_path, {"backtranslate": {"sampling": {"max_tokens": 128}}})
    with TGITestServer(instruction_by_length) as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", "--endpoint", server.url, "--limit", 10) == 0
        before = len(server.requests)
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "b", "--endpoint", server.url, "--limit", 10, "--config", config)
            == 0
        )
        again = kinds(server.requests[before:])
    changed = sum(
        a["instruction"] != b["instruction"]
        for a, b in zip(rows(tmp_path / "a", "backtranslated"), rows(tmp_path / "b", "backtranslated"), strict=True)
    )
    assert 0 < changed < 10
    assert again == {"backtranslate": 10, "curate": changed, "rewrite": changed}


def test_a_reply_with_token_probabilities_answers_a_parsed_score_but_not_the_reverse(tmp_path):
    # expected scores are asked at temperature 1 without a nucleus cut: a parsed run sampling so shares replies
    untruncated = config_file(tmp_path, {"curate": {"sampling": {"temperature": 1.0, "top_p": 1.0}}})
    with TGITestServer() as server:
        common = ("--endpoint", server.url, "--limit", 4, "--config", untruncated)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "parsed", *common) == 0
        before = len(server.requests)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "expected", *common, "--score-mode", "expected") == 0
        assert kinds(server.requests[before:]) == {"curate": 4}  # the stored replies hold no probabilities
        before = len(server.requests)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "parsed-cached", *common) == 0  # read from those that do
        assert generate(DEMO_CORPUS, "--out", tmp_path / "expected-cached", *common, "--score-mode", "expected") == 0
        assert len(server.requests) == before
        assert generate(DEMO_CORPUS, "--out", tmp_path / "parsed-fresh", *common, "--no-cache") == 0
    curated = rows(tmp_path / "expected", "curated")
    assert curated and all(row["expected_score"] is not None for row in curated)
    same_rows(tmp_path / "expected-cached", tmp_path / "expected")
    same_rows(tmp_path / "parsed-cached", tmp_path / "parsed-fresh")  # without the expected_score a fresh one lacks


def test_a_sampled_reply_is_a_fact_until_a_seed_or_no_cache_asks_anew(tmp_path):
    draw = random.Random(7)

    def sampling_model(request):
        if prompt_kind(request.prompt) == "backtranslate":
            return Reply(f"Which of the {draw.randint(2, 10**9)} ideas here matter most?")
        return paper_model(request)

    def instructions(out):
        return [row["instruction"] for row in rows(out, "backtranslated")]

    with TGITestServer(sampling_model) as server:
        common = ("--endpoint", server.url, "--limit", 4, "--stages", "backtranslate")
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", *common) == 0
        assert generate(DEMO_CORPUS, "--out", tmp_path / "b", *common) == 0
        assert instructions(tmp_path / "a") == instructions(tmp_path / "b")
        assert generate(DEMO_CORPUS, "--out", tmp_path / "c", *common, "--no-cache") == 0
        seeded = config_file(tmp_path, {"backtranslate": {"sampling": {"seed": 1}}})
        assert generate(DEMO_CORPUS, "--out", tmp_path / "d", *common, "--config", seeded) == 0
        assert len(server.requests) == 12
    assert set(instructions(tmp_path / "c")).isdisjoint(instructions(tmp_path / "a"))
    assert set(instructions(tmp_path / "d")).isdisjoint(instructions(tmp_path / "a"))


def test_each_of_several_scoring_samples_is_its_own_reply(tmp_path):
    draw = random.Random(3)

    def noisy_judge(request):
        if prompt_kind(request.prompt) == "curate":
            return Reply(f"Judged.\nScore: {draw.randint(1, 5)}")
        return paper_model(request)

    config = config_file(tmp_path, {"curate": {"samples": 3, "min_score": 1}})
    with TGITestServer(noisy_judge) as server:
        common = ("--endpoint", server.url, "--limit", 6, "--stages", "backtranslate,curate", "--config", config)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", *common) == 0
        assert kinds(server.requests) == {"backtranslate": 6, "curate": 18}
        assert generate(DEMO_CORPUS, "--out", tmp_path / "b", *common) == 0
        assert len(server.requests) == 24
    scores = [[p for p in row["provenance"] if p["stage"] == "curate"] for row in rows(tmp_path / "a", "curated")]
    assert any(len({p["raw_output"] for p in three}) > 1 for three in scores)  # three draws, not one thrice
    same_rows(tmp_path / "a", tmp_path / "b")


def test_a_refusal_for_length_is_replayed_while_the_context_is_the_same(tmp_path):
    corpus = tmp_path / "c.jsonl"
    long_doc = {"id": "long", "text": " ".join(f"word{i}" for i in range(3000))}
    corpus.write_text(json.dumps(long_doc) + "\n" + json.dumps({"id": "short", "text": "A short text. " * 20}) + "\n")
    with TGITestServer() as server:
        server.max_total_tokens = 2048
        common = ("--endpoint", server.url, "--stages", "backtranslate")
        assert generate(corpus, "--out", tmp_path / "a", *common) == 0
        asked = len(server.requests)
        assert asked == 3  # the long document refused once, then cut
        assert generate(corpus, "--out", tmp_path / "b", *common) == 0
        assert len(server.requests) == asked
        server.max_total_tokens = 4096  # a server with a longer context: the refusal no longer stands
        assert generate(corpus, "--out", tmp_path / "c", *common) == 0
        assert len(server.requests) == asked + 1
    same_rows(tmp_path / "a", tmp_path / "b")
    assert rows(tmp_path / "c", "backtranslated")[0]["document"] == long_doc["text"]


def test_a_read_only_cache_answers_but_stores_nothing(tmp_path, request_cache):
    read_only = config_file(tmp_path, {"cache": {"mode": "read-only"}})
    with TGITestServer() as server:
        common = ("--endpoint", server.url, "--stages", "backtranslate")
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", *common, "--limit", 2) == 0
        entries = cache_info(request_cache).entries
        assert generate(DEMO_CORPUS, "--out", tmp_path / "b", *common, "--limit", 4, "--config", read_only) == 0
        assert len(server.requests) == 4  # two answered by the cache, two asked
    assert cache_info(request_cache).entries == entries == 2


def test_the_cache_folder_can_be_moved(tmp_path, request_cache):
    elsewhere = tmp_path / "my-cache"
    with TGITestServer() as server:
        common = ("--endpoint", server.url, "--stages", "backtranslate", "--limit", 2)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", *common, "--cache", elsewhere) == 0
        assert generate(DEMO_CORPUS, "--out", tmp_path / "b", *common) == 0  # the default folder knows nothing
        assert generate(DEMO_CORPUS, "--out", tmp_path / "c", *common, "--cache", elsewhere) == 0
        assert len(server.requests) == 4
    assert cache_info(elsewhere).entries == 2 and cache_info(request_cache).entries == 2


def test_the_same_folder_with_a_changed_setting_sets_the_earlier_run_aside(tmp_path, capsys):
    out = tmp_path / "o"
    with TGITestServer(scored_by_document) as server:
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 8) == 0
        earlier_rows = rows(out, "curated")
        asked = len(server.requests)
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 8, "--min-score", 3) == 0
        new_asked = len(server.requests) - asked
        assert generate(DEMO_CORPUS, "--out", tmp_path / "fresh", "--endpoint", server.url, "--limit", 8,
                        "--min-score", 3, "--no-cache") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "held a run with other settings (curate.min_score: None -> 3.0)" in err
    assert "the request cache answers every request whose inputs did not change" in err
    assert new_asked == stats_of(out)["rewrite"]["cache_misses"] > 0  # only the pairs now kept are rewritten
    (aside,) = (out / ".bft" / "earlier").iterdir()
    assert rows(aside, "curated") == earlier_rows  # the earlier run, whole, where the message says
    assert yaml.safe_load((aside / "run_config.yaml").read_text())["curate"]["min_score"] is None
    assert (aside / ".bft" / "journal" / "curate.jsonl").is_file()
    same_rows(out, tmp_path / "fresh")
    assert yaml.safe_load((out / "run_config.yaml").read_text())["curate"]["min_score"] == 3


def test_a_run_killed_mid_way_keeps_every_reply_it_stored(tmp_path, request_cache):
    """SIGKILL a run while replies come in: what it stored is whole and answers the next run, which asks
    only the rest."""

    def slow_model(request):
        reply = paper_model(request)
        reply.delay = 0.1
        return reply

    with TGITestServer(slow_model) as server:
        command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out"]
        common = ["--endpoint", server.url, "--limit", "12", "--max-concurrency", "2", "--no-progress"]
        child = subprocess.Popen([*command, str(tmp_path / "killed"), *common], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 240
            while cache_info(request_cache).entries < 6 and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        stored = cache_info(request_cache).entries
        assert 6 <= stored < 36
        before = len(server.requests)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "b", *common) == 0
        assert len(server.requests) - before == 36 - stored
    assert stats_of(tmp_path / "b")["rewrite"]["kept"] == 12


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_openai_servers_are_keyed_by_the_model_the_request_names(tmp_path, flavor):
    with (
        TGITestServer(flavor=flavor, model_id="org/one") as one,
        TGITestServer(flavor=flavor, model_id="org/two") as two,
    ):
        common = ("--stages", "backtranslate", "--limit", 3)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", "--endpoint", one.url, *common) == 0
        assert generate(DEMO_CORPUS, "--out", tmp_path / "b", "--endpoint", two.url, *common) == 0
        assert len(two.requests) == 3  # another model: asked
        with TGITestServer(flavor=flavor, model_id="org/one") as elsewhere:  # the same model at another URL
            assert generate(DEMO_CORPUS, "--out", tmp_path / "c", "--endpoint", elsewhere.url, *common) == 0
            assert elsewhere.requests == []


def test_a_dry_run_says_how_many_requests_the_cache_answers(tmp_path, capsys):
    with TGITestServer(scored_by_document) as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", "--endpoint", server.url, "--limit", 6) == 0
        kept = stats_of(tmp_path / "a")["curate"]["kept"]
        capsys.readouterr()
        asked = len(server.requests)
        common = ("--out", tmp_path / "b", "--endpoint", server.url, "--dry-run")
        assert generate(DEMO_CORPUS, *common, "--limit", 8) == 0
        plan = capsys.readouterr().out
        assert len(server.requests) == asked  # a dry run sends no request for a reply
    assert (
        f"answers the documents' requests: backtranslate 6 of 8; curate 6 of 6 (and up to 2 after replies to "
        f"come); rewrite {kept} of {kept} (and up to 2 after replies to come)" in plan
    )


def test_the_progress_bars_show_hits_and_misses():
    stats = StageStats(requests=2, cache_hits=5, cache_misses=2)
    assert stats.progress_postfix()["cache"] == "5 hit/2 miss"
    assert "cache" not in StageStats(requests=2).progress_postfix()  # a run without the cache says nothing of it
    assert StageStats.from_dict(stats.as_dict()).cache_hits == 5  # (as stats.json and a Ray block carry them)


def test_a_model_trained_again_into_its_folder_is_asked_anew(tmp_path):
    """A model served from a folder has no revision: its files stand for one (a retrained model, same path)."""
    model = tmp_path / "round1-model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights of the first training")
    with TGITestServer(flavor="vllm", model_id="round1") as server:
        server.model_root = str(model)  # vLLM's `root`: the folder `--model` was given
        common = ("--endpoint", server.url, "--stages", "backtranslate", "--limit", 2)
        assert generate(DEMO_CORPUS, "--out", tmp_path / "a", *common) == 0
        assert generate(DEMO_CORPUS, "--out", tmp_path / "b", *common) == 0
        assert len(server.requests) == 2  # the same model files: answered by the cache
        (model / "model.safetensors").write_bytes(b"weights of the second training, longer")
        assert generate(DEMO_CORPUS, "--out", tmp_path / "c", *common) == 0
        assert len(server.requests) == 4


def test_replies_stored_before_the_repeat_hang_up_existed_still_answer_and_asking_for_it_asks_anew():
    """`sampling.stop_on_repeat` came after the cache: left at 0 it must not change any key (every stored reply
    would be asked again: the key below is the one bft computed before the setting existed); set, the stored
    reply is the cut one, so it is another request."""

    def key(**settings):
        sampling = SamplingConfig(temperature=0.7, stop=["[/RES]"], seed=0, **settings)
        return request_key(["m", "r", "openai"], Request("chat", "Hello"), sampling_key(sampling))

    assert key() == "76115726bdfb503518c4fd138058481264407f2563e530d6d6407d915e9f0f13"
    assert key(stop_on_repeat=0) == key() != key(stop_on_repeat=40) != key(stop_on_repeat=60)


def test_a_schema_refusal_stored_as_too_long_by_an_earlier_bft_is_asked_again(tmp_path):
    """bft once read vLLM's refusal of a fifth stop string (pydantic's "max_length" words) as a prompt too
    long and stored it; replayed, every such request would stay refused and its document be cut. A stored
    refusal in a schema's words is asked again; one in the server's context words is still replayed."""
    endpoint = types.SimpleNamespace(max_input_tokens=None, max_total_tokens=4096, name="http://127.0.0.1:8000")
    endpoint.__dict__.update(model_id="m", model_revision=None, api="openai", server_kind="vllm")
    cache = ReplyCache(RequestCache(tmp_path / "cache"), run=str(tmp_path / "o"))
    _, schema = too_many_stops("vllm", 5)
    for key, detail in (("a", f"HTTP 400: {schema['error']['message']}"), ("b", "HTTP 400: maximum context length")):
        cache.remember_refusal(key, RequestRejected("input_too_long", detail), endpoint)
    assert cache.lookup("a", Request("raw", "x"), [endpoint]) is None
    replayed = cache.lookup("b", Request("raw", "x"), [endpoint])
    assert isinstance(replayed, RequestRejected) and replayed.reason == "input_too_long"
