"""What `run/resume.py` decides from journals, without a server: the engine's skip list and the finished-run
check read one rule, so a transient failure is sent again by both (or by neither, without `retry_failed`)."""

from types import SimpleNamespace

from bft.generation.config import BatchConfig, GenerateConfig, PriceConfig
from bft.generation.layout import PREPARE
from bft.generation.reasons import REQUEST_FAILED
from bft.generation.records import KEPT, REJECTED, StageRecord
from bft.generation.run.journal import Journal
from bft.generation.run.resume import differing_settings, latest_outcomes, read_journals, through_the_stages
from bft.generation.run.stats import StageStats

STAGES = ["backtranslate", "curate"]


def record(doc_id: str, stage: str, status: str, reason: str | None = None) -> StageRecord:
    return StageRecord(doc_id, stage, status, f"text of {doc_id}", 0, "corpus.jsonl:1", reason=reason)


def write_journals(folder, lines: dict[str, list[StageRecord]]) -> dict[str, Journal]:
    journals = {name: Journal(folder / f"{name}.jsonl") for name in [PREPARE, *STAGES]}
    for name, records in lines.items():
        journals[name].open()
        for item in records:
            journals[name].append(item)
        journals[name].close()
    return journals


def test_the_latest_line_is_the_outcome_and_a_transient_failure_is_sent_again_by_engine_and_finished_check(tmp_path):
    folder = tmp_path / ".bft" / "journal"
    journals = write_journals(
        folder,
        {
            PREPARE: [record("gone", PREPARE, REJECTED, "too_short")],
            "backtranslate": [
                record("a", "backtranslate", KEPT),
                record("b", "backtranslate", KEPT),
                record("c", "backtranslate", REJECTED, REQUEST_FAILED),  # retries used up: no verdict
                record("d", "backtranslate", REJECTED, REQUEST_FAILED),
                record("d", "backtranslate", KEPT),  # a later run's attempt: the latest line stands
            ],
            "curate": [record("a", "curate", KEPT)],
        },
    )
    stats = {name: StageStats() for name in journals}
    done, pending = read_journals(journals, stats, retry_failed=True)
    assert done == {PREPARE: {"gone"}, "backtranslate": {"a", "b", "d"}, "curate": {"a"}}
    assert set(pending) == {"b", "d"} and all(where[0] == "backtranslate" for where in pending.values())
    assert journals["backtranslate"].read_at(pending["d"][1]).status == KEPT  # the offset of the latest line
    assert stats["backtranslate"].retried_from_previous_run == 1 and stats["backtranslate"].resumed == 3

    outcomes = latest_outcomes(tmp_path, [PREPARE, *STAGES])
    config = SimpleNamespace(stages=STAGES, retry_failed=True)
    finished = {doc: through_the_stages(doc, outcomes, config) for doc in "abcd"}
    assert finished == {"a": True, "b": False, "c": False, "d": False}  # as the engine: a done, b d pending, c again

    stats = {name: StageStats() for name in journals}
    done, _ = read_journals(journals, stats, retry_failed=False)  # `retry_failed: false`: the failure is a verdict
    assert "c" in done["backtranslate"] and stats["backtranslate"].retried_from_previous_run == 0
    assert through_the_stages("c", outcomes, SimpleNamespace(stages=STAGES, retry_failed=False))


def test_how_requests_go_out_and_what_they_cost_resume_a_folder_but_a_new_model_does_not():
    """Changing `send`, `batch` (a poll interval, the API) or `price` changes no reply: the rerun resumes the
    folder and so finds its pending batches; another model changes the replies: the folder is set aside."""
    old = GenerateConfig()
    old.rewrite.model = "gpt-4o"
    new = GenerateConfig()
    new.rewrite.model = "gpt-4o"
    new.rewrite.send = "batch"
    new.rewrite.batch = BatchConfig(api="anthropic", poll_interval=5.0)
    new.rewrite.price = PriceConfig(input=2.5, output=10.0)
    assert differing_settings(old, new) == []
    new.rewrite.model = "gpt-4.1"
    assert differing_settings(old, new) == ["rewrite.model: 'gpt-4o' -> 'gpt-4.1'"]
