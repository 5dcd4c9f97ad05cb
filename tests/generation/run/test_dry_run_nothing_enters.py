"""`--dry-run` when no document would enter (it says why and fails, as the real run does), and `--probe`
when some stage was not reached (it says so, and uses what it measured for every stage it ran)."""

import json
import re

import pytest

from bft.generation.cli import main
from tests.servers.models import Reply, paper_model, prompt_kind
from tests.servers.tgi import TGITestServer

DOLMA_FIELDS = "(the first record's fields: added, created, id, metadata, source, text)"


@pytest.fixture
def dolma(shared_dir):
    return str(shared_dir / "data" / "dolma-cc-head-sample.jsonl")


def generate(corpus, out, *extra) -> int:
    return main(["generate", str(corpus), "--out", str(out), "--no-progress", *extra])


def test_a_wrong_text_field_dry_run_says_no_document_would_enter_and_fails(dolma, tmp_path, capsys):
    assert generate(dolma, tmp_path / "o", "--text-field", "body", "--dry-run") == 1
    captured = capsys.readouterr()
    assert "10 records read; 0 would enter the first stage; 10 rejected by prepare (missing_text: 10)" in captured.out
    assert "no document would enter backtranslate" in captured.out and "time:" not in captured.out
    assert "bft generate: error: prepare: all 10 documents rejected as missing_text, so none would enter " in (
        captured.err
    )
    assert "text field 'body'; is --text-field right? " + DOLMA_FIELDS in captured.err
    assert not (tmp_path / "o").exists()


def test_humpback_on_plain_text_says_it_needs_html_or_warc_in_the_dry_run_and_the_run(dolma, tmp_path, capsys):
    assert generate(dolma, tmp_path / "o", "--config", "humpback", "--dry-run") == 1
    dry = capsys.readouterr()
    assert "10 rejected by prepare (no_header_segments: 10)" in dry.out
    expected = (
        "prepare: all 10 documents rejected as no_header_segments, so none {} backtranslate: segment.mode is headers"
    )
    assert expected.format("would enter") in dry.err
    assert "HTML pages (.html or .htm files), WARC files (.warc, .warc.gz)" in dry.err
    # the real run agrees: it sends nothing, writes its rejected records, and fails with the same reasons
    with TGITestServer() as server:
        assert generate(dolma, tmp_path / "o", "--config", "humpback", "--endpoint", server.url) == 1
        assert [r for r in server.requests if prompt_kind(r.prompt) != "other"] == []
    run = capsys.readouterr()
    assert expected.format("entered") in run.err and "WARC files" in run.err
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["prepare"]["rejected_by_reason"] == {"no_header_segments": 10}


def test_several_reasons_for_nothing_entering_are_each_counted_with_their_hint(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "body": "x"}\n{"id": "b", "text": \n{"id": "c", "body": "y"}\n')
    assert generate(corpus, tmp_path / "o", "--dry-run") == 1
    err = capsys.readouterr().err
    assert (
        "prepare: all 3 documents rejected (malformed_json: 1, missing_text: 2), so none would enter backtranslate"
        in err
    )
    assert "malformed_json: lines that are not JSON" in err
    assert (
        "missing_text: the records have no text field 'text'; is --text-field right? (the first record's fields: body, id)"
        in err
    )
    with TGITestServer() as server:  # the run: the same, past tense, and exit 1
        assert generate(corpus, tmp_path / "o", "--endpoint", server.url) == 1
    assert "(malformed_json: 1, missing_text: 2), so none entered backtranslate" in capsys.readouterr().err


def test_a_probe_that_reaches_nothing_sends_nothing(dolma, tmp_path, capsys):
    with TGITestServer() as server:
        args = ("--text-field", "body", "--dry-run", "--probe", "3", "--endpoint", server.url)
        assert generate(dolma, tmp_path / "o", *args) == 1
        assert [r for r in server.requests if prompt_kind(r.prompt) != "other"] == []
    assert "none would enter backtranslate" in capsys.readouterr().err


def backtranslation_fails(request):
    """The paper model, except that every backtranslation reply is empty: no document reaches curate."""
    return Reply("") if prompt_kind(request.prompt) == "backtranslate" else paper_model(request)


def test_a_probe_says_which_stages_no_probed_document_reached(dolma, tmp_path, capsys):
    with TGITestServer(backtranslation_fails) as server:
        assert generate(dolma, tmp_path / "o", "--dry-run", "--probe", "2", "--endpoint", server.url) == 0
    plan = capsys.readouterr().out
    assert re.search(r"backtranslate +10 +\S+ +10 +<= 2,560 +[\d,]+ +\d", plan)  # measured: a rate and a time
    assert re.search(r"curate +~0 <= 10 .* - +unknown", plan) and re.search(r"rewrite +~0 <= 10 .* - +unknown", plan)
    assert (
        "time unknown for curate, rewrite: no probed document got that far: backtranslate kept none of the 2 it "
        "was given" in plan
    )
    assert "time of the stages timed (backtranslate):" in plan and "(measured on 2 documents)" in plan
    assert "give --throughput" not in plan  # the probe was given: no advice to give one


def test_a_throughput_given_beside_the_probe_times_the_stages_it_did_not_reach(dolma, tmp_path, capsys):
    with TGITestServer(backtranslation_fails) as server:
        args = ("--dry-run", "--probe", "2", "--throughput", "500", "--endpoint", server.url)
        assert generate(dolma, tmp_path / "o", *args) == 0
    plan = capsys.readouterr().out
    assert re.search(r"curate +~0 <= 10 .* 500 +10 s", plan)  # 10 requests x 512 tokens at 500 tokens/s
    assert "time, all stages in turn:" in plan
    assert "(measured on 2 documents: backtranslate; at 500 tokens/s given: curate, rewrite)" in plan
    assert "unknown" not in plan


def test_a_probe_that_reaches_every_stage_measures_every_stage(dolma, tmp_path, capsys):
    with TGITestServer() as server:
        assert generate(dolma, tmp_path / "o", "--dry-run", "--probe", "2", "--endpoint", server.url) == 0
    plan = capsys.readouterr().out
    for stage in ("backtranslate", "curate", "rewrite"):
        assert re.search(rf"{stage} +.* [\d,]+ +\d+ s\n", plan), stage  # a measured rate and a time
    assert "unknown" not in plan and "time, all stages in turn:" in plan and "(measured on 2 documents)" in plan


def test_an_empty_corpus_is_named_as_such_by_the_dry_run_and_the_run(tmp_path, capsys):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text("\n\n")
    assert generate(corpus, tmp_path / "o", "--dry-run") == 1
    assert f"no record in the corpus {corpus}: no document would enter backtranslate" in capsys.readouterr().err
    with TGITestServer() as server:
        assert generate(corpus, tmp_path / "o", "--endpoint", server.url) == 1
    assert f"no record in the corpus {corpus}: no document entered backtranslate" in capsys.readouterr().err
