"""Odd text never crashes: lone surrogates, unpaired or in ids, and random Unicode through every layer.

JSON lets a document carry `\\ud83d` (half of an emoji) on its own; such a string cannot be written as
UTF-8. It is rejected with a reason naming the record, or replaced and flagged, never a traceback.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bft.generation.cli import main
from bft.generation.config import GenerateConfig, PrepareConfig
from bft.generation.corpus.documents import read_corpus
from bft.generation.corpus.prepare import Preparer
from bft.generation.method.escaping import Escaper, unescape
from bft.generation.method.stages import build_stage
from bft.generation.records import KEPT, Document, Rejected, StageRecord
from bft.generation.run.journal import Journal
from bft.generation.run.output import write_outputs
from tests.servers.tgi import TGITestServer


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json escapes lone surrogates as \udXXX
    return path


def test_lone_surrogates_in_text_and_id_are_rejected_naming_the_record(tmp_path):
    corpus = write(
        tmp_path / "c.jsonl",
        [
            {"id": "half-emoji", "text": "a pleasant note \ud83d about bread"},
            {"id": "bad-\udc00-id", "text": "plain text"},
            {"id": "fine", "text": "plain text too"},
        ],
    )
    items = list(read_corpus(str(corpus)))
    assert [(type(i).__name__, i.id, getattr(i, "reason", None)) for i in items] == [
        ("Rejected", "half-emoji", "invalid_unicode"),
        ("Rejected", "bad-\ufffd-id", "invalid_unicode"),
        ("Document", "fine", None),
    ]
    replaced = list(read_corpus(str(corpus), invalid_unicode="replace"))
    assert replaced[0].text == "a pleasant note \ufffd about bread" and "invalid_unicode_replaced" in replaced[0].flags


def test_bft_generate_over_surrogates_finishes_and_accounts_for_every_record(tmp_path):
    corpus = write(
        tmp_path / "c.jsonl",
        [{"id": "half-emoji", "text": "bread \ud83d notes"}, {"id": "x\udc00", "text": "more bread notes"}]
        + [{"id": f"ok-{n}", "text": f"Bread note number {n} about flour and water."} for n in range(3)],
    )
    with TGITestServer() as server:
        args = ["generate", str(corpus), "--out", str(tmp_path / "o"), "--endpoint", server.url, "--no-progress"]
        assert main(args) == 0
        assert main(args) == 0  # and the rerun too
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["prepare"]["rejected_by_reason"] == {"invalid_unicode": 2}
    assert stats["rewrite"]["kept"] == 3


def test_a_journal_refuses_text_it_cannot_write_and_names_the_record(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    journal.open()
    record = StageRecord(id="doc-9", stage="prepare", status=KEPT, document="x\ud800", position=0, input_location="f:9")
    try:
        journal.append(record)
    except Exception as error:  # noqa: BLE001 (the type and message are what is checked)
        assert "doc-9" in str(error) and "f:9" in str(error) and type(error).__name__ == "BftError"
    else:
        raise AssertionError("a lone surrogate was written")
    finally:
        journal.close()
    assert (tmp_path / "j.jsonl").read_bytes() == b""  # nothing half-written


UNICODE = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=UNICODE, doc_id=UNICODE)
def test_random_unicode_through_prepare_prompts_journal_and_parquet(tmp_path_factory, text, doc_id):
    folder = tmp_path_factory.mktemp("odd")
    corpus = write(folder / "c.jsonl", [{"id": doc_id, "text": text}])
    config = GenerateConfig()
    escaper = Escaper()
    stage = build_stage("backtranslate", config.stage("backtranslate"), escaper=escaper)
    journal = Journal(folder / "journal" / "prepare.jsonl")
    journal.open()
    items = list(Preparer(PrepareConfig())(read_corpus(str(corpus))))
    assert len(items) == 1  # one line, one record out: kept or rejected
    for item in items:
        if isinstance(item, Rejected):
            record = StageRecord(item.id, "prepare", "rejected", item.raw or "", 0, item.location, reason=item.reason)
        else:
            assert isinstance(item, Document)
            item.text.encode("utf-8")  # a document that passed can be written
            assert unescape(escaper.escape(item.text)) == item.text
            stage.request(StageRecord(item.id, "prepare", KEPT, item.text, 0, item.location)).text.encode("utf-8")
            record = StageRecord(item.id, "prepare", KEPT, item.text, 0, item.location)
        journal.append(record)
    journal.close()
    written = write_outputs(folder, [], [folder / "journal"])
    # a run of no stage writes the rejected record, and nothing for a kept one
    assert written.counts == ({"rejected": 1} if isinstance(items[0], Rejected) else {})
