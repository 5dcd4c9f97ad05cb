"""Each stage's model served in turn (`serve.order: in_turn`, `run/served_in_turn.py`): two stand-in SGLang servers
(`tests/servers/engine_stub.py`) with different served names over three stages, the second started only once
the first has stopped, and the same rows as a run that serves both at once."""

import json
import os
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from bft.generation.cli import main as bft
from bft.generation.layout import config_file as config_file_of
from bft.generation.run.served_in_turn import serving_turns
from bft.generation.run.servers import ServeSpec
from tests.generation.run import held_engine
from tests.paths import DEMO_CORPUS, REPO
from tests.servers import engine_stub

TWO_MODELS = {"serve": {"engine": "sglang", "model": "org/backward"}, "rewrite": {"serve": {"model": "org/rewriter"}}}


@pytest.fixture
def stub_sglang(tmp_path, monkeypatch):
    folder = engine_stub.install(tmp_path / "stub")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(REPO)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    return folder


def generate(tmp_path, out_name: str, *flags: str, settings: dict | None = None) -> int:
    config = tmp_path / "two-models.yaml"
    config.write_text(yaml.safe_dump({**TWO_MODELS, **(settings or {})}))
    out = tmp_path / out_name
    return bft(["generate", str(DEMO_CORPUS), "--out", str(out), "--config", str(config), "--limit", "4", *flags])


def rows(out, config: str) -> list[dict]:
    """A config's rows as the data says them (the provenance's timings and endpoints aside)."""
    table = pq.read_table(config_file_of(out, config)).to_pylist()
    for row in table:
        for stage in row.get("provenance") or []:
            for key in ("first_asked_at", "first_asked_endpoint", "first_asked_run", "cached"):
                stage.pop(key, None)
    return sorted(table, key=lambda row: row["id"])


def test_two_models_served_in_turn_start_one_after_the_other_and_give_the_rows_of_both_at_once(
    tmp_path, stub_sglang, capsys
):
    assert generate(tmp_path, "together", "--no-cache") == 0
    capsys.readouterr()
    assert generate(tmp_path, "in-turn", "--no-cache", "--serve-in-turn") == 0
    err = capsys.readouterr().err
    stopped = err.index("bft generate: stopped SGLang serving org/backward")
    assert stopped < err.index("bft generate: starting SGLang serving org/rewriter")
    assert err.count("bft generate: starting SGLang serving") == 2

    together, in_turn = tmp_path / "together", tmp_path / "in-turn"
    for config in ("backtranslated", "rewritten"):
        assert rows(in_turn, config) == rows(together, config)
    stats = json.loads((in_turn / "stats.json").read_text())
    servers = stats["servers"]
    assert [s["stages"] for s in servers["org/backward"]["serving"]] == [["backtranslate", "curate"]]
    assert [s["stages"] for s in servers["org/rewriter"]["serving"]] == [["rewrite"]]
    for server in servers.values():
        (serving,) = server["serving"]
        assert serving["startup_seconds"] >= engine_stub.STARTING_SECONDS and serving["work_seconds"] > 0
    baseline = json.loads((together / "stats.json").read_text())
    for stage in ("prepare", "backtranslate", "curate", "rewrite"):
        assert {k: stats[stage][k] for k in ("entered", "kept", "rejected")} == {
            k: baseline[stage][k] for k in ("entered", "kept", "rejected")
        }
    assert stats["backtranslate"]["requests"] == baseline["backtranslate"]["requests"] > 0


def test_rerunning_a_run_served_in_turn_starts_only_the_servers_with_work_left(tmp_path, stub_sglang, capsys):
    """A run stopped after its first turn (here: run with the first two stages only, then all three) resumes
    every document at the next stage, and starts no server for the turn whose stages are all done."""
    assert generate(tmp_path, "out", "--serve-in-turn", "--stages", "backtranslate,curate") == 0
    capsys.readouterr()
    assert generate(tmp_path, "out", "--serve-in-turn") == 0
    err = capsys.readouterr().err
    assert "backtranslate, curate: every document is through; its servers are not started" in err
    assert "starting SGLang serving org/backward" not in err
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert list(stats["servers"]) == ["org/rewriter"] and stats["rewrite"]["kept"] > 0
    assert stats["backtranslate"]["resumed_from_journal"] == stats["backtranslate"]["entered"] > 0


def test_turns_are_cut_where_the_served_model_changes():
    """BAFT: the backward model writes and scores, then the rewriter; a stage with endpoints of its own (not
    served) goes with the turn it falls in; a model served again later is a turn again."""
    backward, rewriter = (ServeSpec("vllm", m, m, sys.executable, (), None, 900.0) for m in ("org/b", "org/r"))
    stages = ["backtranslate", "curate", "rewrite"]
    baft = {"backtranslate": backward, "curate": backward, "rewrite": rewriter}
    assert serving_turns(stages, baft) == [["backtranslate", "curate"], ["rewrite"]]
    own_judge = {"backtranslate": backward, "rewrite": rewriter}
    assert serving_turns(stages, own_judge) == [["backtranslate", "curate"], ["rewrite"]]
    back_again = {"backtranslate": backward, "curate": rewriter, "rewrite": backward}
    assert serving_turns(stages, back_again) == [["backtranslate"], ["curate"], ["rewrite"]]


def test_a_document_failed_in_an_earlier_turn_waits_for_the_next_run_of_the_command(tmp_path, monkeypatch):
    """The first turn's server failed one document (its retries spent): the second turn, whose server cannot
    answer the first stage, holds it back; the next run of the command serves the first turn again for it."""
    folder = held_engine.install(tmp_path / "stub")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(REPO)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv(held_engine.FAIL_PROMPTS_WITH, "sourdough starter")  # the first document's text
    assert generate(tmp_path, "out", "--serve-in-turn", settings={"max_retries": 1}) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["backtranslate"]["rejected_by_reason"] == {"request_failed": 1}
    assert (stats["prepare"]["entered"], stats["curate"]["entered"], stats["rewrite"]["entered"]) == (4, 3, 3)
    monkeypatch.delenv(held_engine.FAIL_PROMPTS_WITH)
    assert generate(tmp_path, "out", "--serve-in-turn", settings={"max_retries": 1}) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["backtranslate"]["rejected_by_reason"] == {} and stats["rewrite"]["entered"] == 4
    assert stats["backtranslate"]["retried_from_previous_run"] == 1
