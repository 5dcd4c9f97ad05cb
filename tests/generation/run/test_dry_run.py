"""`bft generate --dry-run`: the plan of a run, against what the run then does; the probe against the test server."""

import json
import re

import yaml
from datasets import load_dataset

from bft.generation.cli import main
from tests.servers.models import prompt_kind
from tests.servers.tgi import TGITestServer


def line(**record) -> str:
    return json.dumps(record) + "\n"


def corpus_with_a_long_document(tmp_path):
    corpus = tmp_path / "c.jsonl"
    texts = [f"Document {i} explains how tides rise and fall twice a day along the coast." for i in range(5)]
    corpus.write_text("".join(line(id=f"d{i}", text=t) for i, t in enumerate(texts)) + line(
        id="long", text=" ".join(f"word{i}" for i in range(3000))))  # fmt: skip
    return corpus


def word_tokenizer(folder):
    """A tokenizer with one token per whitespace-separated word, so exact counts are known by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)
    return str(folder)


def test_a_dry_run_sends_and_writes_nothing_and_says_what_the_run_then_does(tmp_path, capsys):
    corpus = corpus_with_a_long_document(tmp_path)
    config = tmp_path / "c.yaml"
    settings = {"prepare": {"context_tokens": 4096}, "backtranslate": {"tokenizer": word_tokenizer(tmp_path / "tok")}}
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "out"
    common = [str(corpus), "--out", str(out), "--config", str(config), "--no-progress"]
    with TGITestServer() as server:
        assert main(["generate", *common, "--endpoint", server.url, "--dry-run", "--throughput", "100"]) == 0
        assert server.requests == [] and not out.exists()
        plan = capsys.readouterr().out
        assert main(["generate", *common, "--endpoint", server.url]) == 0
        sent = [r.prompt for r in server.requests if prompt_kind(r.prompt) == "backtranslate"]
    stats = json.loads((out / "stats.json").read_text())
    assert "nothing was written, nothing was sent" in plan
    assert "6 records read; 5 would enter the first stage; 1 rejected by prepare (exceeds_context: 1)" in plan
    assert "dropped for length before any request (prepare.context_tokens): 1: long" in plan
    rejected = load_dataset(str(out), "rejected", split="train")
    assert [(r["id"], r["reason"]) for r in rejected] == [("long", "exceeds_context")]  # what the plan said
    backtranslate = re.search(r"backtranslate +(\d+) +([\d,]+) +(\d+) +<= ([\d,]+) +100 +(\S+ \S+)", plan)
    documents, tokens, requests, completion, _ = backtranslate.groups()
    assert int(documents) == int(requests) == stats["backtranslate"]["entered"] == 5
    assert int(tokens.replace(",", "")) == sum(len(prompt.split()) for prompt in sent)  # exact, by its tokenizer
    assert int(completion.replace(",", "")) == 5 * 256  # requests x max_tokens
    assert re.search(r"curate +<= 5 +<= ~[\d,]+ +5 +<= 2,560", plan)  # estimated, said so with ~
    assert "~: prompt tokens estimated at 3 characters a token" in plan
    assert "time, all stages in turn:" in plan and "(at 100 tokens/s given)" in plan


def test_a_probe_measures_the_server_on_n_documents_and_writes_nothing(tmp_path, capsys):
    corpus = corpus_with_a_long_document(tmp_path)
    out = tmp_path / "out"
    with TGITestServer() as server:
        args = ["generate", str(corpus), "--out", str(out), "--endpoint", server.url, "--dry-run", "--probe", "2"]
        assert main(args) == 0
        kinds = [prompt_kind(r.prompt) for r in server.requests]
    assert sorted(kinds) == ["backtranslate"] * 2 + ["curate"] * 2 + ["rewrite"] * 2  # N requests per stage
    assert not out.exists()
    plan = capsys.readouterr().out
    assert "nothing was written; 2 documents probed" in plan and "measured on 2 documents" in plan
    assert "time: unknown" not in plan
    assert re.search(r"curate +~6 <= 6 ", plan)  # the probe kept every pair: all 6 expected to reach curation


def test_probe_without_dry_run_or_endpoint_is_refused(tmp_path, capsys):
    corpus = corpus_with_a_long_document(tmp_path)
    assert main(["generate", str(corpus), "--out", str(tmp_path / "o"), "--probe", "2"]) == 2
    assert "--probe measures the server for a dry run: add --dry-run" in capsys.readouterr().err
    assert main(["generate", str(corpus), "--out", str(tmp_path / "o"), "--probe", "2", "--dry-run"]) == 2
    assert "--probe sends real requests: give --endpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
