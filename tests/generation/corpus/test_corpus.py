"""Reading corpora: every supported input, and a clear error or a rejected record for bad input."""

import gzip
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bft.generation.corpus.documents import content_id, read_corpus
from bft.generation.corpus.files import corpus_file_list
from bft.generation.corpus.rows import rows_of_file
from bft.generation.errors import CorpusError
from bft.generation.records import Document, Rejected


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_real_dolma_sample_is_read_with_ids_urls_and_sources(shared_dir):
    docs = list(read_corpus(str(shared_dir / "data" / "dolma-cc-head-sample.jsonl")))
    assert len(docs) == 10 and all(isinstance(d, Document) for d in docs)
    first = docs[0]
    assert first.id.startswith("http://100kinvesting.com/")
    assert first.url == first.id and first.source == "common-crawl"
    assert first.text.startswith("We will be starting to hold weekly teleconferences")
    assert first.location.endswith("dolma-cc-head-sample.jsonl:1")
    assert [d.position for d in docs] == list(range(10))


def test_gzip_parquet_and_folders_are_read_in_a_stable_order(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    with gzip.open(folder / "a.json.gz", "wt") as handle:  # Dolma's own naming
        handle.write(json.dumps({"id": "a1", "text": "alpha"}) + "\n")
    table = pa.table({"id": ["b1", "b2"], "body": ["beta", "gamma"]})
    pq.write_table(table, folder / "b.parquet")
    docs = list(read_corpus(str(folder), text_field="body"))
    # a.json.gz has no `body` field: a rejected record, not a crash
    assert [(type(d).__name__, d.id) for d in docs] == [("Rejected", "a1"), ("Document", "b1"), ("Document", "b2")]
    assert docs[0].reason == "missing_text"
    assert docs[2].location.endswith("b.parquet#row2")


def test_records_without_usable_text_become_rejected_records(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "no-text"},
            {"id": "empty", "text": "  \n"},
            {"id": "number", "text": 42},
            {"id": "ok", "text": "fine"},
        ],
    )
    docs = list(read_corpus(str(path)))
    assert [(d.id, d.reason if isinstance(d, Rejected) else "kept") for d in docs] == [
        ("no-text", "missing_text"),
        ("empty", "empty_text"),
        ("number", "text_not_a_string"),
        ("ok", "kept"),
    ]


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "text": "ok"}\n{"id": "2", "text": \n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: malformed JSON .*corpus\.malformed_lines: reject"):
        list(read_corpus(str(path), malformed_lines="error"))


def test_broken_lines_anywhere_become_rejected_records_and_reading_goes_on(tmp_path):
    path = tmp_path / "web.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "first"}\n'
        b'{"id": "b", "text": \n'  # cut short: malformed JSON
        b"42\n"  # JSON, not an object
        b"[1, 2]\n"  # a list on a later line is a broken line, not a JSON-array file
        b'{"id": "c", "text": "caf\xe9"}\n'  # not UTF-8
        b'{"id": "d", "text": "last"}\n'
    )
    items = list(read_corpus(str(path), invalid_utf8="reject", malformed_lines="reject"))
    fates = [(i.id, i.reason if isinstance(i, Rejected) else "kept") for i in items]
    assert fates == [
        ("a", "kept"),
        (f"location:{path}:2", "malformed_json"),
        (f"location:{path}:3", "not_a_json_object"),
        (f"location:{path}:4", "not_a_json_object"),
        (f"location:{path}:5", "invalid_utf8"),
        ("d", "kept"),
    ]
    assert items[1].raw == '{"id": "b", "text": ' and items[1].location == f"{path}:2"  # the line, kept to read


def test_a_utf8_byte_order_mark_is_read_past(tmp_path):
    path = tmp_path / "windows.jsonl"
    row = lambda n: json.dumps({"id": n, "text": f"text {n}"}).encode()  # noqa: E731
    # a BOM at the start of the file, and one where a second file was concatenated onto the first
    path.write_bytes(b"\xef\xbb\xbf" + row("a") + b"\n" + b"\xef\xbb\xbf" + row("b") + b"\n")
    for mode in ("error", "reject"):
        documents = list(read_corpus(str(path), malformed_lines=mode))
        assert [(type(d).__name__, d.id, d.text) for d in documents] == [
            ("Document", "a", "text a"),
            ("Document", "b", "text b"),
        ]


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"id": "1", "text": "ok"}\n\n{"id": "2", "text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"latin1\.jsonl:3: invalid UTF-8"):
        list(read_corpus(str(path)))


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="no such file or folder"):
        list(read_corpus(str(tmp_path / "nowhere.jsonl")))


def test_duplicate_ids_never_merge(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "x", "text": "one"}, {"id": "x", "text": "two"}])
    with pytest.raises(
        CorpusError, match=r"d\.jsonl:2: duplicate document id 'x' \(first seen as record 1 of the corpus\)"
    ):
        list(read_corpus(str(path)))


def test_documents_without_id_get_a_stable_content_id(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"text": "same words"}])
    (doc,) = read_corpus(str(path))
    assert doc.id == content_id("same words") and doc.id.startswith("sha256:")


def test_limit_stops_reading(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"id": str(i), "text": f"doc {i}"} for i in range(10)])
    assert len(list(read_corpus(str(path), limit=3))) == 3


def test_unknown_hub_dataset_is_a_clear_error(tmp_path, tgi):
    # A Hub endpoint that knows no dataset (every /api route answers 404), reached by the real `datasets`.
    env = {"HF_ENDPOINT": tgi.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", "PATH": ""}
    code = "from bft.generation.corpus.documents import read_corpus; list(read_corpus('nobody/no-such-dataset'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert (
        "CorpusError: cannot load Hub dataset 'nobody/no-such-dataset' (split 'train', revision main)" in result.stderr
    )


def test_a_hub_dataset_is_streamed(tmp_path, hub):
    from huggingface_hub import HfApi

    rows = [
        {"id": f"hub-{i}", "text": f"Hub document {i}.", "metadata": {"url": f"https://example.org/{i}"}}
        for i in range(5)
    ]
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    api = HfApi()
    api.create_repo("bft-org/corpus", repo_type="dataset")
    api.upload_folder(repo_id="bft-org/corpus", repo_type="dataset", folder_path=tmp_path / "data", path_in_repo="data")
    documents = list(read_corpus("bft-org/corpus", limit=4))
    assert [d.id for d in documents] == ["hub-0", "hub-1", "hub-2", "hub-3"]
    assert documents[0].url == "https://example.org/0" and documents[0].location.startswith(
        "bft-org/corpus@main/train#row1"
    )


def test_a_hub_dataset_resolves_to_its_data_files_for_parallel_reading(tmp_path, hub):
    from huggingface_hub import HfApi

    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "train-0.jsonl", [{"id": "a", "text": "First."}, {"id": "b", "text": "Second."}])
    write_jsonl(tmp_path / "data" / "train-1.jsonl", [{"id": "c", "text": "Third."}])
    api = HfApi()
    api.create_repo("bft-org/shards", repo_type="dataset")
    api.upload_folder(repo_id="bft-org/shards", repo_type="dataset", folder_path=tmp_path / "data", path_in_repo="data")
    files = corpus_file_list("bft-org/shards")
    assert len(files) == 2 and all(f.startswith("hf://datasets/bft-org/shards@") for f in files)
    rows = [row["id"] for file in files for _, row in rows_of_file(file)]
    assert rows == ["a", "b", "c"]


def test_every_file_of_a_corpus_folder_is_read_or_named(tmp_path, capsys):
    import bz2

    import zstandard

    folder = tmp_path / "corpus"
    folder.mkdir()
    line = lambda n: (json.dumps({"id": n, "text": f"text {n}"}) + "\n").encode()  # noqa: E731
    (folder / "a.jsonl").write_bytes(line("a"))
    (folder / "b.json").write_bytes(line("b"))  # JSON lines, as Dolma names them
    (folder / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(line("c")))
    (folder / "d.jsonl.bz2").write_bytes(bz2.compress(line("d")))
    (folder / "E.JSONL").write_bytes(line("e"))
    (folder / "notes.txt").write_text("not a corpus file")
    assert [d.id for d in read_corpus(str(folder))] == ["e", "a", "b", "c", "d"]  # sorted paths: E.JSONL first
    assert "1 file(s) not read (not a corpus file type): notes.txt" in capsys.readouterr().err


def test_a_json_array_file_says_what_bft_reads(tmp_path):
    # a file that is not JSON lines at all is an error even when broken lines are rejected
    for name, text in (("rows.json", json.dumps([{"id": "a", "text": "x"}], indent=1)),
                       ("one-line.json", json.dumps([{"id": "a", "text": "x"}]))):  # fmt: skip
        path = tmp_path / name
        path.write_text(text)
        for mode in ("error", "reject"):
            with pytest.raises(CorpusError, match="looks like a JSON array: bft reads JSON lines"):
                list(read_corpus(str(path), malformed_lines=mode))


def test_hidden_files_and_folders_of_a_corpus_folder_are_not_read(tmp_path, capsys):
    folder = tmp_path / "corpus"
    (folder / ".bft" / "journal").mkdir(parents=True)
    (folder / "sub" / ".cache").mkdir(parents=True)
    write_jsonl(folder / "data.jsonl", [{"id": "real", "text": "a real document"}])
    write_jsonl(folder / ".bft" / "journal" / "prepare.jsonl", [{"id": "journal", "text": "bft's own state"}])
    write_jsonl(folder / "sub" / ".cache" / "x.jsonl", [{"id": "cache", "text": "a tool's cache"}])
    write_jsonl(folder / "._data.jsonl", [{"id": "fork", "text": "a macOS resource fork"}])
    assert [d.id for d in read_corpus(str(folder))] == ["real"]
    assert corpus_file_list(str(folder)) == [str(folder / "data.jsonl")]
    assert (
        "not read, being hidden or a bft run's own state: ._data.jsonl, .bft/, sub/.cache/" in capsys.readouterr().err
    )
    (folder / "data.jsonl").unlink()
    with pytest.raises(
        CorpusError, match=r"no .* files besides hidden ones and bft's run state \(\._data\.jsonl, \.bft/"
    ):
        list(read_corpus(str(folder)))


def test_location_ids_cannot_collide_with_real_ids(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xff\xfe not utf-8\n" + (json.dumps({"id": f"{path}:1", "text": "a real id"}) + "\n").encode())
    items = list(read_corpus(str(path), invalid_utf8="reject"))
    assert [i.id for i in items] == [f"location:{path}:1", f"{path}:1"]
    assert len({i.id for i in items}) == 2


def test_records_without_ids_and_with_the_same_text_stay_two_records(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "same words"}, {"text": "same words"}])
    first, second = read_corpus(str(path))
    assert second.id == first.id + "#2" and second.id != first.id
