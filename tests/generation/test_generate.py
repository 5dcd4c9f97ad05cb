"""`bft generate` end to end against the TGI test server, through the real clients."""

import json

import pytest
import yaml
from datasets import load_dataset

from bft.generation.cli import main
from bft.generation.corpus.documents import read_corpus
from bft.generation.method.prompts import load_template
from tests.paths import DEMO_CONFIG, DEMO_CORPUS
from tests.servers.models import Fault, Reply, Sequence, document_of, draft_of, paper_model, prompt_kind
from tests.servers.tgi import TGITestServer

DEMO_IDS = [d.id for d in read_corpus(str(DEMO_CORPUS))]


def generate(*args) -> int:
    return main(["generate", *map(str, args), "--no-progress"])


def load(out, config):
    return load_dataset(str(out), config, split="train")


def mixed_model(request):
    """Follows the formats, but scores some documents low and garbles a few replies."""
    kind = prompt_kind(request.prompt)
    if kind == "curate":
        if "Lorem ipsum" in request.prompt or "Home | About us" in request.prompt:
            return Reply("Navigation text.\nScore: 1")
        if "MEGA SALE" in request.prompt:
            return Reply("I cannot rate this.")  # no score line
        return Reply("Helpful and complete.\nScore: 5")
    if kind == "rewrite" and "chain keeps slipping" in draft_of(request.prompt):
        return Reply("Here is a better version, without tags.")
    return paper_model(request)


def test_chat_mode_end_to_end_accounts_for_every_document(tmp_path):
    out = tmp_path / "out"
    with TGITestServer(mixed_model) as server:
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url) == 0
        routes = {r.route for r in server.requests}
    assert routes == {"/v1/chat/completions"}  # the papers' default: chat requests

    stats = json.loads((out / "stats.json").read_text())
    for name in ("prepare", "backtranslate", "curate", "rewrite"):
        assert stats[name]["entered"] == stats[name]["kept"] + stats[name]["rejected"]
    assert stats["prepare"]["entered"] == len(DEMO_IDS)
    assert stats["curate"]["rejected_by_reason"] == {"score_below_threshold": 2, "score_missing": 1}
    assert stats["rewrite"]["rejected_by_reason"] == {"rewrite_missing_tags": 1}

    rewritten, rejected = load(out, "rewritten"), load(out, "rejected")
    assert len(load(out, "backtranslated")) == 30 and len(load(out, "curated")) == 27
    assert len(rewritten) == 26 and len(rejected) == 4
    # every document leaves as exactly one final record: kept at the end, or rejected somewhere
    assert sorted(list(rewritten["id"]) + list(rejected["id"])) == sorted(DEMO_IDS)
    assert list(rewritten["id"]) == [i for i in DEMO_IDS if i in set(list(rewritten["id"]))]  # corpus order

    row = rewritten[0]
    assert row["instruction"].startswith("What should I know about")
    assert row["score"] == 5 and row["response"] == row["document"]
    assert row["url"].startswith("https://") and row["input_location"].endswith("corpus.jsonl:1")
    stages = [p["stage"] for p in row["provenance"]]
    assert stages == ["backtranslate", "curate", "rewrite"]
    curate = row["provenance"][1]
    assert curate["model_id"] == "bft/test-model" and curate["model_revision"] == server.model_sha
    assert curate["api"] == "tgi" and curate["mode"] == "chat"
    assert curate["template"] == "curate" and curate["template_sha256"] == load_template("curate").sha256
    assert json.loads(curate["sampling"])["temperature"] == 1.0 and json.loads(curate["sampling"])["top_p"] == 0.9
    assert curate["raw_output"] == "Helpful and complete.\nScore: 5" and curate["parse_status"] == "ok"

    missing = rejected.filter(lambda r: r["reason"] == "score_missing")[0]
    assert missing["stage"] == "curate" and missing["provenance"][-1]["raw_output"] == "I cannot rate this."
    card = (out / "README.md").read_text()
    assert "config_name: rewritten" in card and "score_below_threshold" in card and "arXiv:2408.04614" in card


def test_chat_requests_carry_the_paper_prompt_without_the_llama2_wrapper(tmp_path, tgi):
    assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", tgi.url, "--limit", 1) == 0
    document = next(read_corpus(str(DEMO_CORPUS))).text
    first = tgi.requests[0]
    assert first.payload["messages"] == [
        {"role": "user", "content": load_template("backtranslate").user_message(response=document)}
    ]
    assert first.payload["temperature"] == 1.0 and first.payload["top_p"] == 0.9


def write_config(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_raw_mode_on_tgi_sends_the_papers_llama2_prompts_to_generate(tmp_path, tgi):
    raw = {"mode": "raw", "raw_format": "llama2"}
    config = write_config(tmp_path / "raw.yaml", {"backtranslate": raw, "curate": raw, "rewrite": raw})
    assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", tgi.url, "--config", config, "--limit", 2) == 0
    assert {r.route for r in tgi.requests} == {"/generate"}
    document = next(read_corpus(str(DEMO_CORPUS))).text
    first_bt = next(
        r for r in tgi.requests if prompt_kind(r.prompt) == "backtranslate" and document_of(r.prompt) == document
    )
    assert first_bt.payload["inputs"] == load_template("backtranslate").llama2_prompt(response=document)
    assert first_bt.payload["parameters"]["do_sample"] is True and first_bt.payload["parameters"]["details"] is True
    assert len(load(tmp_path / "o", "rewritten")) == 2


def test_raw_mode_with_prefill_on_an_openai_compatible_server(tmp_path):
    config = write_config(
        tmp_path / "prefill.yaml",
        {
            "backtranslate": {"mode": "raw"},
            "curate": {"mode": "raw", "prefill": "Score:"},
            "rewrite": {"mode": "raw", "prefill": "[RES]", "sampling": {"stop": ["[/RES]"]}},
        },
    )
    with TGITestServer(tgi_info=False) as server:  # no /info: vLLM, SGLang, transformers serve
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--config", config, "--limit", 3)
            == 0
        )
        assert {r.route for r in server.requests} == {"/v1/completions"}
        curate = [r for r in server.requests if prompt_kind(r.prompt) == "curate"]
        assert all(r.payload["prompt"].endswith("[/INST]Score:") for r in curate)
        assert all(r.payload["model"] == "bft/test-model" for r in server.requests)  # discovered from /v1/models
    rows = load(tmp_path / "o", "rewritten")
    assert len(rows) == 3 and rows[0]["score"] == 5
    provenance = rows[0]["provenance"]
    assert provenance[1]["prefill"] == "Score:" and provenance[1]["raw_output"] == " 5"
    assert provenance[2]["api"] == "openai" and not provenance[2]["raw_output"].endswith("[/RES]")  # stop consumed


def test_a_server_that_lists_no_model_needs_model_and_gets_it(tmp_path, capsys):
    with TGITestServer(tgi_info=False, model_id=None) as server:  # `transformers serve PATH` (`bft serve`)
        args = [DEMO_CORPUS, "--endpoint", server.url, "--limit", 2]
        assert generate(*args, "--out", tmp_path / "a") == 2
        assert "lists no model at /v1/models" in capsys.readouterr().err and not server.requests
        assert generate(*args, "--out", tmp_path / "b", "--model", "/models/m1") == 0
        assert {r.payload["model"] for r in server.requests} == {"/models/m1"}


RAMBLE = " and so on" * 1000  # 3,000 tokens after the stop: what a server that ignores stops goes on to generate


@pytest.mark.parametrize("stream", [True, False])
def test_stop_sequences_are_honoured_when_the_server_ignores_them(tmp_path, stream):
    """Whole replies are cut at their first stop sequence by bft; a streamed one is also hung up on once text
    comes past the stop, so the server stops generating (`transformers serve` ignores stops when batching)."""
    config = write_config(
        tmp_path / "c.yaml",
        {
            "stream": stream,
            "curate": {"mode": "raw", "prefill": "Score:", "sampling": {"stop": ["\n"], "max_tokens": 4000}},
        },
    )
    rambling = Sequence(
        [],
        then=lambda r: (
            Reply("Score: 5\nNow another pair. Score: 1" + RAMBLE, token_delay=0.01)
            if prompt_kind(r.prompt) == "curate"
            else paper_model(r)
        ),
    )
    with TGITestServer(rambling, tgi_info=False, honour_stop=False, flavor="vllm") as server:
        args = ("--out", tmp_path / "o", "--endpoint", server.url, "--config", config, "--limit", 2)
        assert generate(DEMO_CORPUS, *args) == 0
        streamed = server.tokens_streamed
    curated = load(tmp_path / "o", "curated")
    assert list(curated["score"]) == [5, 5]  # read before the stop, not the rambling after it
    reply = curated[0]["provenance"][1]
    if stream:  # hung up past the stop: the reply a server honouring stops sends, and the ramble not generated
        assert (reply["raw_output"], reply["finish_reason"]) == (" 5", "stop")
        # of the two curate replies' 2 x 3,007 tokens (10 ms apart), at most half were sent, with every other
        # stage's few tokens: bft read past the stop and hung up within 15 s, not at the reply's end
        assert streamed < 3_000
    else:  # a whole reply, kept as it came
        assert reply["raw_output"].startswith(" 5\nNow another pair. Score: 1 and so on")


@pytest.mark.parametrize("flavor", ["tgi", "vllm"])
def test_more_stop_sequences_than_the_server_takes_are_sent_up_to_its_limit_and_the_rest_watched(tmp_path, flavor):
    """TGI (`/info` max_stop_sequences) and vLLM (VLLM_MAX_STOP_STRINGS, 4) refuse a request with more stops than
    they take, every request alike (the demo's rewrite has 5: on vLLM every rewrite was refused, and read as a
    prompt too long). bft sends the first ones up to the limit and cuts at the others itself."""
    stops = ["[/RES]", "\n\nQuestion:", "\n\n[RES]", "\n\nThe answer", "\n\nEND"]
    past_the_fifth = lambda r: (  # noqa: E731
        Reply("[RES] A good answer.\n\nEND of it, and more after." + RAMBLE)
        if prompt_kind(r.prompt) == "rewrite"
        else paper_model(r)
    )
    config = write_config(tmp_path / "c.yaml", {"rewrite": {"sampling": {"stop": stops, "max_tokens": 4000}}})
    with TGITestServer(past_the_fifth, flavor=flavor, tgi_info=flavor == "tgi") as server:
        args = ("--out", tmp_path / "o", "--endpoint", server.url, "--config", config, "--limit", 2)
        assert generate(DEMO_CORPUS, *args) == 0
        sent = [r.payload.get("stop") or r.payload.get("parameters", {}).get("stop") for r in server.requests]
    assert [stop for stop in sent if stop and len(stop) > 1] == [stops[:4]] * 2  # the two rewrites, at the limit
    rewritten = load(tmp_path / "o", "rewritten")
    assert list(rewritten["response"]) == ["A good answer."] * 2
    if flavor == "vllm":  # streamed: hung up on at the fifth stop, as at any other (not read to the ramble's end)
        assert rewritten[0]["provenance"][2]["raw_output"] == "[RES] A good answer."


LOOP = "Feed the starter flour and water every day, and keep it somewhere warm.\n\n"


@pytest.mark.parametrize("stream", [True, False])
def test_a_rewrite_that_loops_is_cut_where_it_repeats_when_the_stage_asks(tmp_path, stream):
    """A small model says its answer, then says it again until `max_tokens` (7 of 17 demo rewrites did):
    `stop_on_repeat` makes the reply end before the repeat, so it becomes a row, and a streamed one is hung up
    on there, so the rest is not generated. Without it the reply is the token limit's: truncated."""
    looping = lambda r: (  # noqa: E731
        Reply("[RES]\n" + LOOP * 200, token_delay=0.005) if prompt_kind(r.prompt) == "rewrite" else paper_model(r)
    )
    rewrite = {"sampling": {"stop": ["[/RES]"], "max_tokens": 1000}}
    for asked in (30, 0):
        rewrite["sampling"]["stop_on_repeat"] = asked
        config = write_config(tmp_path / f"c{asked}.yaml", {"stream": stream, "rewrite": rewrite})
        out = tmp_path / f"o{asked}"
        with TGITestServer(looping, tgi_info=False, flavor="vllm") as server:
            args = ("--out", out, "--endpoint", server.url, "--config", config, "--limit", 2, "--no-cache")
            assert generate(DEMO_CORPUS, *args) == 0
            streamed = server.tokens_streamed
        if asked:
            rewritten = load(out, "rewritten")
            assert list(rewritten["response"]) == [LOOP.strip()] * 2
            reply = rewritten[0]["provenance"][2]
            if stream:  # hung up at the repeat: the reply as bft cut it, and most of the loop never generated
                assert (reply["raw_output"], reply["finish_reason"]) == ("[RES]\n" + LOOP, "stop")
                assert streamed < 500  # of 2 x 1,000 the loops would take, with the other stages few
            else:  # a whole reply, kept as it came (to its token limit), cut by the stage
                assert reply["finish_reason"] == "length" and reply["raw_output"].count(LOOP) > 10
        else:
            assert list(load(out, "rejected")["reason"]) == ["rewrite_truncated"] * 2


def test_overload_and_server_errors_are_retried(tmp_path):
    script = Sequence(
        [Fault(429, "Model is overloaded", "overloaded"), Fault(503, "unhealthy", "unhealthy"), Fault(reset=True)]
    )
    with TGITestServer(script) as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--limit", 2) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["backtranslate"]["retries_by_cause"] == {"connection": 1, "http_503": 1, "overloaded": 1}
    assert len(load(tmp_path / "o", "rewritten")) == 2


def test_retries_exhausted_become_a_rejected_record(tmp_path):
    always = lambda r: Fault(503, "unhealthy", "unhealthy") if "sourdough" in r.prompt else paper_model(r)  # noqa: E731
    config = write_config(tmp_path / "c.yaml", {"max_retries": 1})
    with TGITestServer(always) as server:
        assert (
            generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--limit", 2, "--config", config)
            == 0
        )
    rejected = load(tmp_path / "o", "rejected")
    assert list(rejected["reason"]) == ["request_failed"] and rejected[0]["provenance"][-1]["attempts"] == 2


def test_a_rerun_retries_documents_lost_to_a_passing_failure(tmp_path):
    """A burst of 503s is not a verdict: once the server is back, a rerun sends those documents again."""
    out, config = tmp_path / "o", write_config(tmp_path / "c.yaml", {"max_retries": 1})
    burst = Sequence([Fault(503, "unhealthy", "unhealthy")] * 30, when=lambda r: prompt_kind(r.prompt) == "curate")
    with TGITestServer(burst) as server:
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 10, "--config", config) == 0
        lost = json.loads((out / "stats.json").read_text())["curate"]["rejected_by_reason"].get("request_failed", 0)
        assert lost > 0
        server.script = paper_model  # the server is well again
        before = len(server.requests)
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 10, "--config", config) == 0
        resent = [r for r in server.requests[before:] if prompt_kind(r.prompt) == "curate"]
    stats = json.loads((out / "stats.json").read_text())
    assert len(resent) == lost and stats["curate"]["retried_from_previous_run"] == lost
    assert "request_failed" not in stats["curate"]["rejected_by_reason"]
    assert len(load(out, "rewritten")) == 10  # 0 documents lost to the faults
    journal = [json.loads(line) for line in (out / ".bft" / "journal" / "curate.jsonl").read_text().splitlines()]
    assert sum(e["reason"] == "request_failed" for e in journal) == lost  # every attempt's error is kept


def test_retry_failed_false_keeps_transient_failures_rejected(tmp_path):
    out, config = tmp_path / "o", write_config(tmp_path / "c.yaml", {"max_retries": 0, "retry_failed": False})
    burst = Sequence([Fault(503, "unhealthy", "unhealthy")] * 2, when=lambda r: prompt_kind(r.prompt) == "curate")
    with TGITestServer(burst) as server:
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 4, "--config", config) == 0
        server.script = paper_model
        before = len(server.requests)
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 4, "--config", config) == 0
        assert len(server.requests) == before
    assert list(load(out, "rejected")["reason"]) == ["request_failed", "request_failed"]


def test_bad_auth_stops_the_run_with_a_clear_message(tmp_path, capsys):
    with TGITestServer(lambda r: Fault(401, "Unauthorized", "authentication")) as server:
        assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--max-concurrency", 2) == 2
        assert len(server.requests) <= 2  # stopped, not one rejection per document
    assert "answered HTTP 401" in capsys.readouterr().err


def test_rerun_resumes_without_requesting_finished_work(tmp_path):
    out = tmp_path / "o"
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 5) == 0
        first = len(server.requests)
        # a torn last line, as a SIGKILL during a write leaves it
        with open(out / ".bft" / "journal" / "rewrite.jsonl", "a") as journal:
            journal.write('{"id": "bft-demo-0')
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url) == 0
        second = len(server.requests) - first
    assert first == 15 and second == 75  # 25 new documents x 3 stages
    rewritten = load(out, "rewritten")
    assert sorted(list(rewritten["id"])) == sorted(DEMO_IDS)  # each document exactly once


def test_a_different_configuration_never_mixes_with_the_run_in_the_folder(tmp_path, tgi, capsys):
    out = tmp_path / "o"
    assert generate(DEMO_CORPUS, "--out", out, "--endpoint", tgi.url, "--limit", 1) == 0
    config = write_config(tmp_path / "k4.yaml", {"curate": {"min_score": 4}})
    assert generate(DEMO_CORPUS, "--out", out, "--endpoint", tgi.url, "--config", config, "--limit", 2) == 0
    err = capsys.readouterr().err
    assert "held a run with other settings (curate.min_score: None -> 4.0)" in err  # names what differs
    (aside,) = (out / ".bft" / "earlier").iterdir()
    assert len(load(aside, "rewritten")) == 1 and len(load(out, "rewritten")) == 2  # each run whole, apart


def test_a_failed_start_does_not_block_the_corrected_command(tmp_path, tgi, capsys):
    out = tmp_path / "o"
    assert generate(DEMO_CORPUS, "--out", out, "--endpoint", "http://127.0.0.1:9", "--limit", 2) == 2  # no server
    assert (out / "run_config.yaml").exists()
    config = write_config(tmp_path / "k4.yaml", {"curate": {"min_score": 4}})  # corrected, other settings too
    assert generate(DEMO_CORPUS, "--out", out, "--endpoint", tgi.url, "--limit", 2, "--config", config) == 0
    assert load(out, "curated")[0]["score"] == 5 and yaml.safe_load((out / "run_config.yaml").read_text())["curate"][
        "min_score"] == 4  # fmt: skip


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"curate": {"min_scor": 4}}, "unknown key(s) ['min_scor']"),
        ({"curate": {"min_score": "high"}}, "curate.min_score: expected float"),
        ({"curate": {"score_mode": "mean"}}, "curate.score_mode: 'mean' is not"),
        ({"backtranslate": {"max_concurrency": 0}}, "backtranslate.max_concurrency must be at least 1"),
        ({"rewrite": {"mode": "chat", "prefill": "[RES]"}}, "rewrite.prefill needs mode: raw"),
        ({"stages": ["curate", "backtranslate"]}, "must be in pipeline order"),
    ],
)
def test_invalid_configs_fail_before_any_request(tmp_path, tgi, capsys, config, message):
    path = write_config(tmp_path / "bad.yaml", config)
    assert generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", tgi.url, "--config", path) == 2
    assert message in capsys.readouterr().err
    assert tgi.requests == []


def test_the_shipped_demo_config_is_valid():
    from bft.generation.config.files import load_config

    config = load_config(DEMO_CONFIG)
    assert config.curate.prefill == "Score:" and config.rewrite.sampling.stop[0] == "[/RES]"
    # the rewrite's other stops end a reply where the model starts the prompt over; none at a reply's start
    assert all(stop.startswith("\n\n") for stop in config.rewrite.sampling.stop[1:])
    assert "score 5" in config.note  # the card says how the demo departs from the papers


def test_stage_subset_writes_only_those_configs(tmp_path, tgi):
    assert (
        generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", tgi.url, "--stages", "backtranslate", "--limit", 2)
        == 0
    )
    assert len(load(tmp_path / "o", "backtranslated")) == 2
    assert not (tmp_path / "o" / "curated").exists()


@pytest.mark.parametrize("name", ["baft", "humpback"])
def test_the_shipped_paper_configs_are_valid(name):
    from bft.generation.config.files import load_config

    config = load_config(DEMO_CONFIG.parents[1] / "configs" / f"{name}.yaml")
    # each stage on the model of its role: backward writes, forward (seed-trained) scores, chat rewrites
    roles = {"baft": {"backtranslate": "backward-model", "curate": "forward-model", "rewrite": "llama-2-70b-chat"},
             "humpback": {"backtranslate": "m-yx", "curate": "m-0"}}[name]  # fmt: skip
    assert {s: [e.split("//")[1].split(":")[0] for e in config.stage(s).endpoints] for s in config.stages} == {
        s: [host] for s, host in roles.items()
    }
    if name == "baft":
        assert config.stages == ["backtranslate", "curate", "rewrite"] and config.curate.threshold == 5
        assert config.prepare.context_tokens == 4096 and config.rewrite.sampling.temperature == 1.0
    else:
        assert config.stages == ["backtranslate", "curate"] and config.curate.score_mode == "expected"
        assert config.curate.threshold == 4.5 and config.backtranslate.sampling.temperature == 0.7
        assert config.segment.mode == "headers"


def test_a_wrong_text_field_fails_the_run_and_names_the_likely_cause(tmp_path, capsys):
    with TGITestServer() as server:
        code = generate(DEMO_CORPUS, "--out", tmp_path / "o", "--endpoint", server.url, "--text-field", "body")
        assert [r for r in server.requests if prompt_kind(r.prompt) != "other"] == []  # no document was sent
    assert code == 1
    err = capsys.readouterr().err
    assert "prepare: all 30 documents rejected as missing_text" in err and "--text-field" in err
    assert "(the first record's fields: added, created, id, metadata, source, text)" in err


def test_records_without_ids_and_with_the_same_text_end_as_one_document_and_one_duplicate(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["Bread notes.", "Bread notes.", "Other."]))
    with TGITestServer() as server:
        assert generate(corpus, "--out", tmp_path / "o", "--endpoint", server.url) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["prepare"]["rejected_by_reason"] == {"duplicate_text": 1} and stats["rewrite"]["kept"] == 2


def test_a_hub_corpus_the_token_cannot_read_says_to_check_hf_token(tmp_path, tgi, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    hub.refused_tokens.add("hf_revoked")
    assert generate("bft-org/private-corpus", "--out", tmp_path / "o", "--endpoint", tgi.url) == 2
    err = capsys.readouterr().err
    assert (
        "cannot load Hub dataset 'bft-org/private-corpus'" in err and "answered 401" in err and "check HF_TOKEN" in err
    )
