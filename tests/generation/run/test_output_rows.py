"""The rows a run writes are its journals' records, whichever reader read the lines.

`write_outputs` reads journal lines with Arrow's JSON reader and falls back to `StageRecord.from_dict` where
Arrow would read a line otherwise (`run/output.py`). A user relies on: every field of a record as the journal
holds it (odd text, nulls, floats, lists, provenance), the latest entry of a document rerun, a document larger
than Arrow's block, an old journal's missing list as an empty list, and a corrupt line named by file and line.
"""

import json

import pyarrow.parquet as pq
import pytest

from bft.generation.errors import BftError
from bft.generation.records import KEPT, Provenance, StageRecord
from bft.generation.run.journal import Journal
from bft.generation.run.output import write_outputs


def record(position: int, status: str = KEPT, **fields) -> StageRecord:
    return StageRecord(
        f"doc-{position}", "backtranslate", status, f"document {position}", position, f"c:{position}", **fields
    )


def journal(folder, records, extra_lines: bytes = b"") -> None:
    """A backtranslate journal holding `records`, then `extra_lines` as they are."""
    book = Journal(folder / "backtranslate.jsonl")
    book.open()
    for each in records:
        book.append(each)
    book.close()
    with open(folder / "backtranslate.jsonl", "ab") as handle:
        handle.write(extra_lines)


def rows(out, config: str) -> list[dict]:
    files = sorted((out / config).glob("*.parquet"))
    return pq.read_table(files[0]).to_pylist() if files else []


def as_row(each: StageRecord) -> dict:
    row = each.to_dict()
    row.pop("position")
    return row


def test_every_field_of_a_record_is_written_as_the_journal_holds_it(tmp_path):
    records = [
        record(
            0,
            instruction='Qu\'est-ce que \u00e9crit \u2014 \U0001f35e ?\n\t"quoted" \\ back',
            score=4,
            expected_score=4.123456789012345,
            mean_score=1e-300,
            grounding=0.1 + 0.2,
            response="",
            url="https://example.org/\u00e9",
            flags=["invalid_unicode_replaced", "x"],
            provenance=[
                Provenance("backtranslate", model_id="m", raw_output="raw\u0000text", prompt_tokens=3, cached=True),
                Provenance("curate", attempts=2, cached=False, sampling='{"seed": 1}'),
            ],
        ),
        record(1, "rejected", reason="instruction_truncated"),
        record(2, instruction="plain"),
    ]
    journal(tmp_path / "journal", records)
    written = write_outputs(tmp_path, ["backtranslate"], [tmp_path / "journal"])
    assert written.counts == {"backtranslated": 2, "rejected": 1}
    assert rows(tmp_path, "backtranslated") == [as_row(records[0]), as_row(records[2])]
    assert rows(tmp_path, "rejected") == [as_row(records[1])]


def test_a_document_rerun_is_written_once_with_its_latest_outcome_in_corpus_order(tmp_path):
    first = [record(2), record(0, "rejected", reason="endpoint_error"), record(1)]
    journal(tmp_path / "journal", [*first, record(0, instruction="asked again")])
    write_outputs(tmp_path, ["backtranslate"], [tmp_path / "journal"])
    assert [(r["id"], r["instruction"]) for r in rows(tmp_path, "backtranslated")] == [
        ("doc-0", "asked again"),
        ("doc-1", None),
        ("doc-2", None),
    ]
    assert rows(tmp_path, "rejected") == []


def test_a_document_larger_than_arrows_block_is_written_whole(tmp_path):
    large = record(1, instruction="big", response="word " * 600_000)  # 3 MB, over the 1 MiB JSON block
    journal(tmp_path / "journal", [record(0), large, record(2)])
    write_outputs(tmp_path, ["backtranslate"], [tmp_path / "journal"])
    assert rows(tmp_path, "backtranslated")[1] == as_row(large)


def test_a_torn_last_line_is_not_a_row(tmp_path):
    journal(tmp_path / "journal", [record(0), record(1)], extra_lines=record(2).to_json()[:40].encode())
    write_outputs(tmp_path, ["backtranslate"], [tmp_path / "journal"])
    assert [r["id"] for r in rows(tmp_path, "backtranslated")] == ["doc-0", "doc-1"]


def test_an_old_journal_line_without_flags_or_provenance_reads_them_as_empty_lists(tmp_path):
    old = record(1).to_dict()
    del old["flags"], old["provenance"]
    journal(tmp_path / "journal", [record(0)], extra_lines=(json.dumps(old) + "\n").encode())
    write_outputs(tmp_path, ["backtranslate"], [tmp_path / "journal"])
    assert [(r["flags"], r["provenance"]) for r in rows(tmp_path, "backtranslated")] == [([], []), ([], [])]


def test_a_corrupt_journal_line_is_named_by_file_and_line(tmp_path):
    journal(tmp_path / "journal", [record(0)], extra_lines=b'{"id": "doc-1", "stage": \n')
    with pytest.raises(BftError, match=r"backtranslate\.jsonl:2: corrupt journal line"):
        write_outputs(tmp_path, ["backtranslate"], [tmp_path / "journal"])
