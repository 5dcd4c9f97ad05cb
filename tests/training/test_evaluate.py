"""`bft eval`: answers, judging in both orders, AlpacaEval files, the data report; against the TGI test server."""

import json
import re
import time

import pytest
from huggingface_hub import HfApi

from bft.generation.cli import main
from bft.training.evaluate import load_instructions
from bft.training.models import resolve_model
from tests.paths import DEMO_CORPUS, REPO
from tests.servers.models import Reply, paper_model, prompt_kind, tagger
from tests.servers.tgi import TGITestServer

# Humpback sec. 2.3, pinned here literally: the tags the code defines must be these sentences
SEED_TAG = "Answer in the style of an AI Assistant."  # S_a
WEB_TAG = "Answer with knowledge from web search."  # S_w

EVAL_SET = REPO / "builders" / "data" / "eval_instructions.jsonl"


def echo(request):
    """A model that answers with what it was asked, so a test can see the prompt."""
    return Reply(f"You asked: {request.prompt}")


def run_eval(*args) -> int:
    return main(["eval", *map(str, args)])


def test_bft_ships_at_least_50_varied_instructions_of_its_own():
    rows, name = load_instructions("bft")
    assert name == "bft-eval" and len(rows) >= 50
    assert len({r["instruction"] for r in rows}) == len(rows)
    assert len({r["category"] for r in rows}) >= 8  # writing, coding, math, advice, ...


def test_generate_answers_every_instruction_with_both_tags_and_the_papers_decoding(tmp_path):
    out = tmp_path / "model_outputs.json"
    with TGITestServer(script=echo) as server:
        assert run_eval("generate", "--endpoint", server.url, "--out", out) == 0
        payloads = [r.payload for r in server.requests]
    outputs = json.loads(out.read_text())
    rows, _ = load_instructions("bft")
    assert [o["instruction"] for o in outputs] == [r["instruction"] for r in rows]
    assert set(outputs[0]) == {"instruction", "output", "generator", "dataset"}
    assert outputs[0]["generator"] == "bft/test-model" and outputs[0]["dataset"] == "bft-eval"
    assert outputs[0]["output"] == f"You asked: {rows[0]['instruction']}\n\n{SEED_TAG} {WEB_TAG}"
    assert all(p["temperature"] == 0.7 and p["top_p"] == 0.9 for p in payloads)


def test_generate_with_s_a_only_in_a_system_message(tmp_path):
    out = tmp_path / "o.json"
    with TGITestServer(script=echo) as server:
        args = ["--tags", "S_a", "--tag-placement", "system", "--limit", 3, "--generator", "m1"]
        assert run_eval("generate", "--endpoint", server.url, "--out", out, *args) == 0
        messages = server.requests[0].payload["messages"]
    assert messages[0] == {"role": "system", "content": SEED_TAG} and messages[1]["role"] == "user"
    outputs = json.loads(out.read_text())
    assert len(outputs) == 3 and outputs[0]["generator"] == "m1" and SEED_TAG not in outputs[0]["output"]


def test_generate_asks_with_bafts_second_suffix_and_names_unknown_tags(tmp_path, capsys):
    out = tmp_path / "o.json"
    with TGITestServer(script=echo) as server:
        assert (
            run_eval("generate", "--endpoint", server.url, "--out", out, "--tags", "S_a,S_w_if_needed", "--limit", 2)
            == 0
        )
        message = server.requests[0].payload["messages"][-1]["content"]
    assert message.endswith(f"\n\n{SEED_TAG} Answer with knowledge from web search if needed.")
    assert WEB_TAG + " " not in message  # not S_w as well
    assert run_eval("generate", "--endpoint", "http://127.0.0.1:9", "--out", out, "--tags", "S_b") == 2
    assert "unknown tag(s) ['S_b']" in capsys.readouterr().err


def test_a_hub_dataset_is_an_instruction_set(tmp_path, hub):
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"instruction": f"Question {i}?"}) + "\n" for i in range(4))
    )
    api = HfApi()
    api.create_repo("bft-org/my-evals", repo_type="dataset")
    api.upload_file(path_or_fileobj=tmp_path / "train.jsonl", path_in_repo="train.jsonl", repo_id="bft-org/my-evals",
                    repo_type="dataset")  # fmt: skip
    rows, name = load_instructions("bft-org/my-evals")
    assert [r["instruction"] for r in rows] == [f"Question {i}?" for i in range(4)] and rows[0]["dataset"] == name


def outputs_file(path, generator, answers):
    rows = [{"instruction": q, "output": a, "generator": generator, "dataset": "t"} for q, a in answers.items()]
    path.write_text(json.dumps(rows))
    return path


def response(prompt, label):
    return re.search(
        rf"Response \({label}\):\n(.*?)(\n\nResponse \(b\):|\n\nExplain your decision)", prompt, re.S
    ).group(1)


def longer_wins(request):
    """A judge that prefers the longer response, and cannot decide on one instruction."""
    if "Unclear" in request.prompt:
        return Reply("Hmm, both are fine I suppose.")  # no verdict line: unparseable
    a, b = response(request.prompt, "a"), response(request.prompt, "b")
    verdict = "tie" if len(a) == len(b) else "(a)" if len(a) > len(b) else "(b)"
    return Reply(f"The preferred one is more complete.\nPreferred: {verdict}")


def first_position(request):
    return Reply("Preferred: (a)")


@pytest.fixture
def pair_files(tmp_path):
    model = {"Q1": "a long and detailed answer", "Q2": "short", "Q3": "same", "Unclear Q4": "x"}
    reference = {"Q1": "brief", "Q2": "a much longer reference answer", "Q3": "same", "Unclear Q4": "y"}
    return outputs_file(tmp_path / "m.json", "m1", model), outputs_file(tmp_path / "r.json", "ref", reference)


def test_judge_both_orders_ties_and_unparseable_verdicts(tmp_path, pair_files, capsys):
    model, reference = pair_files
    out = tmp_path / "annotations.json"
    with TGITestServer(script=longer_wins) as server:
        # one pair got no verdict in either order: the annotations are written, and the command says so, exit 1
        assert run_eval("judge", "--outputs", model, "--reference", reference, "--judge", server.url, "--out", out) == 1
        prompts = [r.prompt for r in server.requests]
    captured = capsys.readouterr()
    assert "the judge gave no readable verdict, in either order, for 1 of 4 pairs (first: 'Unclear Q4')" in captured.err
    assert len(prompts) == 8  # 4 pairs x 2 orders
    first_q1 = next(p for p in prompts if "\nQ1\n" in p and "Response (a):\nbrief" in p)
    assert "Response (b):\na long and detailed answer" in first_q1  # the reference shown first, then swapped
    annotations = json.loads(out.read_text())
    assert [a["preference"] for a in annotations] == [2.0, 1.0, 1.5, None]
    assert annotations[0]["output_1"] == "brief" and annotations[0]["generator_2"] == "m1"
    assert annotations[0]["preference_by_order"] == [2.0, 2.0] and annotations[3]["preference_by_order"] == [None, None]
    summary = json.loads((tmp_path / "annotations.summary.json").read_text())
    assert summary["win_rate"] == pytest.approx(50.0) and summary["n_total"] == 3 and summary["n_dropped"] == 1
    assert summary["unparseable_verdicts"] == 2 and summary["orders_agree"] == 1.0
    assert summary["lc_method"].startswith("bft's simplified length control")
    printed = captured.out
    assert "win rate 50.00" in printed and "length-controlled (bft's simplified fit, not AlpacaEval 2's GLM)" in printed
    # the annotations file is AlpacaEval's format: `bft eval winrate` recomputes the same figures from it
    assert run_eval("winrate", out) == 0
    recomputed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert recomputed["win_rate"] == summary["win_rate"] and recomputed["standard_error"] == summary["standard_error"]


def test_empty_outputs_are_refused_before_any_judging(tmp_path, capsys):
    reference = outputs_file(tmp_path / "r.json", "r", {"Q1": "a"})
    (tmp_path / "none.json").write_text("[]")
    blank = outputs_file(tmp_path / "blank.json", "m", {"Q1": "   "})
    with TGITestServer() as server:
        for outputs, message in ((tmp_path / "none.json", "the list is empty; there is nothing to judge"),
                                 (blank, "record 0 ('Q1') has an empty `output`")):  # fmt: skip
            args = (
                "judge",
                "--outputs",
                outputs,
                "--reference",
                reference,
                "--judge",
                server.url,
                "--out",
                tmp_path / "x",
            )
            assert run_eval(*args) == 2
            assert message in capsys.readouterr().err
        assert not server.requests
    (tmp_path / "a.json").write_text("[]")
    assert run_eval("winrate", tmp_path / "a.json") == 2
    with TGITestServer(script=lambda r: Reply("")) as server:  # a model that answers nothing
        assert run_eval("generate", "--endpoint", server.url, "--out", tmp_path / "m.json", "--limit", 2) == 2
    assert "2 of 2 answers are empty" in capsys.readouterr().err and not (tmp_path / "m.json").exists()


def test_a_judge_that_always_picks_the_first_position_ends_at_ties(tmp_path, pair_files):
    model, reference = pair_files
    out = tmp_path / "a.json"
    with TGITestServer(script=first_position) as server:
        assert run_eval("judge", "--outputs", model, "--reference", reference, "--judge", server.url, "--out", out) == 0
    assert {a["preference"] for a in json.loads(out.read_text())} == {1.5}


def test_judge_refuses_outputs_without_a_reference(tmp_path, capsys):
    model = outputs_file(tmp_path / "m.json", "m", {"Q1": "a", "Q9": "b"})
    reference = outputs_file(tmp_path / "r.json", "r", {"Q1": "a"})
    with TGITestServer() as server:
        code = run_eval(
            "judge", "--outputs", model, "--reference", reference, "--judge", server.url, "--out", tmp_path / "x"
        )
        assert code == 2 and not server.requests
    assert "1 instruction(s) of --outputs have no reference output (first: 'Q9')" in capsys.readouterr().err


def test_winrate_reads_alpacaeval_annotations(tmp_path, capsys):
    # AlpacaEval's own annotation records: preference 1/2, and 0 for an old-style draw
    records = [
        {"instruction": f"q{i}", "output_1": "r", "output_2": "m", "preference": p} for i, p in enumerate([2, 1, 2, 0])
    ]
    (tmp_path / "annotations.json").write_text(json.dumps(records))
    assert run_eval("winrate", tmp_path / "annotations.json") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["win_rate"] == pytest.approx(62.5) and summary["n_draws"] == 1


def contaminating(request):
    """The paper model, except that one document's instruction is copied from bft's eval set."""
    if prompt_kind(request.prompt) == "backtranslate" and "sourdough" in request.prompt:
        return Reply("Why do onions make people cry when they are cut?")
    return paper_model(request)


def test_the_data_report_on_a_small_generated_dataset(tmp_path, capsys):
    out = tmp_path / "out"
    with TGITestServer(script=contaminating) as server:
        args = ["generate", DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 10, "--no-progress"]
        assert main(list(map(str, args))) == 0
    assert run_eval("report", out, "--out", tmp_path / "report.json") == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    configs = {c["name"]: c for c in report["configs"]}
    assert set(configs) == {"curated", "rewritten"} and report["unit"] == "words"
    rewritten = configs["rewritten"]
    assert rewritten["response_length"]["mean"] > rewritten["instruction_length"]["mean"] > 0
    assert configs["curated"]["diversity_rows"] == rewritten["diversity_rows"] == rewritten["rows"]  # equal sizes
    assert 0 < rewritten["response_unique_trigrams"] <= 1
    assert rewritten["source_overlap"]["mean"] > 0.9  # the paper model's rewrites copy the draft
    assert report["scores"] == {"5": rewritten["rows"]}
    decon = report["decontamination"]
    assert decon["eval_set"] == "bft-eval" and decon["eval_instructions"] == 60
    assert [f["id"] for f in decon["flagged"]] == ["bft-demo-000"]
    assert decon["flagged"][0]["eval_instruction"] == "Why do onions make people cry when they are cut?"
    assert "1 of" in printed and "flagged" in printed
    # lengths in tokens, as BAFT's Table 6, with a tokenizer (the embedded tiny model's: SmolLM2's)
    tokenizer = resolve_model("embedded:tiny-llama")
    assert run_eval("report", out, "--tokenizer", tokenizer, "--eval-set", "none", "--out", tmp_path / "t.json") == 0
    in_tokens = json.loads((tmp_path / "t.json").read_text())
    assert in_tokens["unit"] == "tokens" and "decontamination" not in in_tokens
    tokens = {c["name"]: c["response_length"]["mean"] for c in in_tokens["configs"]}
    assert tokens["rewritten"] > rewritten["response_length"]["mean"]  # more tokens than words
    # every figure names how it was computed
    assert set(report["methods"]) == {
        "lengths",
        "distinct trigrams",
        "overlap with source",
        "scores",
        "decontamination",
    }
    assert "whitespace-separated words" in report["methods"]["lengths"] and "tokens" in in_tokens["methods"]["lengths"]
    assert "how each figure was computed:" in printed and report["methods"]["scores"] in printed
    # response complexity from a served tagger, per config
    with TGITestServer(script=tagger) as server:
        args = (
            "report",
            out,
            "--eval-set",
            "none",
            "--tagger",
            server.url,
            "--tag-size",
            3,
            "--out",
            tmp_path / "g.json",
        )
        assert run_eval(*args) == 0
        assert len(server.requests) == 6  # 3 pairs of each of the two configs
    tagged = {c["name"]: c["tags"] for c in json.loads((tmp_path / "g.json").read_text())["configs"]}
    assert set(tagged) == {"curated", "rewritten"} and all(t["tagged"] == 3 for t in tagged.values())
    assert "tags rewritten:" in capsys.readouterr().out


def test_answers_are_asked_with_the_concurrency_given(tmp_path):
    def slow(request):
        time.sleep(0.3)
        return Reply("An answer.")

    with TGITestServer(script=slow) as server:
        args = [
            "generate",
            "--endpoint",
            server.url,
            "--out",
            tmp_path / "m.json",
            "--limit",
            8,
            "--max-concurrency",
            4,
        ]
        assert run_eval(*args) == 0
        assert server.peak_in_flight == 4
