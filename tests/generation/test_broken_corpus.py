"""Web corpora as they come, through `bft generate`: a byte-order mark, broken lines anywhere, and a
generate output folder given as a corpus. A broken line is a rejected record, counted; the run goes on."""

import json

from datasets import load_dataset

from bft.generation.cli import main
from bft.generation.corpus.files import corpus_files
from tests.servers.tgi import TGITestServer

TIDES = "Tides rise and fall twice a day along the coast, pulled by the moon and, less, by the sun."
BREAD = "Bread needs flour, water, salt and time; the dough doubles in a warm kitchen within hours."


def generate(corpus, out, url, *extra) -> int:
    return main(["generate", str(corpus), "--out", str(out), "--endpoint", url, "--no-progress", *extra])


def broken_corpus(path):
    """A BOM before the first record, then a line cut short, a line that is JSON but no object, a good one."""
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps({"id": "tides", "text": TIDES}).encode()
        + b'\n{"id": "cut", "text": "the crawl stopped here\n'
        + b"null\n"
        + json.dumps({"id": "bread", "text": BREAD}).encode()
        + b"\n"
    )
    return path


def test_broken_lines_are_rejected_under_their_location_counted_and_the_run_goes_on(tmp_path, capsys):
    corpus = broken_corpus(tmp_path / "web.jsonl")
    with TGITestServer() as server:
        assert generate(corpus, tmp_path / "o", server.url) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["prepare"]["entered"] == 4 and stats["prepare"]["kept"] == 2
    assert stats["prepare"]["rejected_by_reason"] == {"malformed_json": 1, "not_a_json_object": 1}
    rejected = load_dataset(str(tmp_path / "o"), "rejected", split="train")
    assert sorted((r["id"], r["stage"], r["reason"], r["input_location"]) for r in rejected) == [
        (f"location:{corpus}:2", "prepare", "malformed_json", f"{corpus}:2"),
        (f"location:{corpus}:3", "prepare", "not_a_json_object", f"{corpus}:3"),
    ]
    rewritten = load_dataset(str(tmp_path / "o"), "rewritten", split="train")
    assert sorted(rewritten["id"]) == ["bread", "tides"]  # the BOM'd first record read as any other
    assert "utf-8-sig" not in capsys.readouterr().err


def test_malformed_lines_error_stops_at_the_first_broken_line_naming_it(tmp_path, capsys):
    corpus = broken_corpus(tmp_path / "web.jsonl")
    config = tmp_path / "strict.yaml"
    config.write_text("corpus:\n  malformed_lines: error\n")
    with TGITestServer() as server:
        assert generate(corpus, tmp_path / "o", server.url, "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert f"{corpus}:2: malformed JSON" in err  # the line after the BOM'd one: the BOM is no error
    assert "utf-8-sig" not in err and "Traceback" not in err


def test_a_generate_output_folder_given_as_a_corpus_reads_no_journal(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in (("tides", TIDES), ("bread", BREAD))))
    first = tmp_path / "first"
    with TGITestServer() as server:
        assert generate(corpus, first, server.url, "--stages", "backtranslate") == 0
        journals = sorted((first / ".bft" / "journal").glob("*.jsonl"))
        assert journals and (first / "stats.json").is_file()  # a resumable run's state: no data
        capsys.readouterr()
        # its `backtranslated` rows have the document under `document`: read them as a corpus
        args = ("--text-field", "document", "--dry-run", "--throughput", "100")
        assert generate(first, tmp_path / "second", server.url, *args) == 0
    captured = capsys.readouterr()
    assert "not read, being hidden or a bft run's own state: .bft/, stats.json" in captured.err
    assert "2 records read; 2 would enter the first stage" in captured.out  # the two parquet rows, nothing else
    assert corpus_files(first) == sorted(first.glob("backtranslated/*.parquet"))
