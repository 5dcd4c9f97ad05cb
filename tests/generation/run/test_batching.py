"""`send: batch` through whole `bft generate` runs: rewrite sent as provider batches while backtranslate and curate
go live, against the OpenAI and Anthropic batch test servers (`tests/servers/openai_batch.py`,
`anthropic_batch.py`, which follow the providers' API references) and the TGI test server, every one answering
with `models.paper_model`.

The rows are a live run's; a run killed while its batch is pending resumes that batch by id and pays for
nothing twice; expired, errored and failed items go again in a new batch and are counted; what no batch run
can do is refused, naming the stage and the setting, before any request. Hooks that change a batch while bft
waits on it run while the run goes on in a thread (the servers answer a batch only when it is polled, so the
tests wait for states, never for time).
"""

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bft.generation.cli import main
from bft.generation.config import SamplingConfig
from bft.generation.corpus.documents import read_corpus
from bft.generation.layout import batch_ledger, config_file, journal_dir, read_rows
from bft.generation.method.stages import Request
from bft.generation.run.batching import custom_id
from bft.generation.run.journal import Journal
from tests.paths import DEMO_CORPUS
from tests.servers import anthropic_batch, openai_batch
from tests.servers.anthropic_batch import AnthropicBatchServer
from tests.servers.models import Fault, Reply, SeenRequest, paper_model, prompt_kind
from tests.servers.openai_batch import OpenAIBatchServer
from tests.servers.tgi import TGITestServer

KEY_ENV = "BFT_TEST_BATCH_KEY"
DOCUMENTS = 6
CONFIGS = ("backtranslated", "curated", "rewritten", "rejected")
SECOND = list(read_corpus(str(DEMO_CORPUS)))[1]  # the document the refusing scripts pick on


def batch_config(tmp_path: Path, api: str, url: str, stage: str = "rewrite", **settings) -> Path:
    """A run config sending `stage` by batch (polled every 0.05-0.2 s, with `settings`), the others live."""
    batch = {"api": api, "url": url, "token_env": KEY_ENV, "poll_interval": 0.05, "poll_max": 0.2}
    batch |= settings.pop("batch", {})
    path = tmp_path / f"{stage}-{api}.yaml"
    path.write_text(yaml.safe_dump({stage: {"send": "batch", "model": "test-batch-model", "batch": batch} | settings}))
    return path


def arguments(out: Path, tgi: str, config: Path | None = None) -> list[str]:
    extra = ["--config", str(config)] if config is not None else []
    return [
        "generate",
        str(DEMO_CORPUS),
        "--out",
        str(out),
        "--endpoint",
        tgi,
        "--limit",
        str(DOCUMENTS),
        "--no-progress",
        *extra,
    ]


def rows(out: Path, config: str) -> list[tuple]:
    return [
        (r["id"], r["stage"], r["reason"], r["instruction"], r["score"], r["response"])
        for r in read_rows(config_file(out, config))
    ]


def stats_of(out: Path, stage: str = "rewrite") -> dict:
    return json.loads((out / "stats.json").read_text())[stage]


def ledger_lines(out: Path, stage: str = "rewrite") -> list[dict]:
    path = batch_ledger(out, stage)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    """Wait until `condition()` holds (a state, not a time: the deadline only stops a hung test)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Background:
    """`bft generate` running in a thread while the test changes the servers' batches."""

    def __init__(self, args: list[str]):
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(args,), daemon=True)
        self.thread.start()

    def _run(self, args: list[str]) -> None:
        self.code = main(args)

    def join(self) -> int | None:
        """The run's exit code; a run that does not end (a batch never sent) fails the test instead of hanging it."""
        self.thread.join(120)
        assert not self.thread.is_alive(), "bft generate did not end"
        return self.code


def generate(args: list[str]) -> int | None:
    """`bft generate` in this process (in a thread, so that a run that hangs fails the test)."""
    return Background(args).join()


def openai_lines(server: OpenAIBatchServer, batch_id: str) -> list[str]:
    """The custom_ids of a batch's request file, in file order."""
    data = server.contents[server.batches[batch_id]["input_file_id"]]
    return [json.loads(line)["custom_id"] for line in data.splitlines()]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_batch.API_KEY)


def test_rewrite_by_batch_gives_the_rows_of_a_live_run_and_sends_nothing_live(tmp_path, key):
    live, batched, again = tmp_path / "live", tmp_path / "batched", tmp_path / "again"
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        assert generate(arguments(live, tgi.url)) == 0
        tgi.requests.clear()
        config = batch_config(tmp_path, "openai", provider.url)
        assert generate(arguments(batched, tgi.url, config)) == 0
        assert not [r for r in tgi.requests if prompt_kind(r.prompt) == "rewrite"]  # rewrite sent nothing live
        assert provider.submitted and set(provider.submitted.values()) == {1}
        # a second output folder: every rewrite reply comes from the request cache, no batch is submitted
        batches = len(provider.batches)
        assert generate(arguments(again, tgi.url, config)) == 0
        assert len(provider.batches) == batches

    for name in CONFIGS:
        assert rows(batched, name) == rows(live, name), name
        assert rows(again, name) == rows(live, name), name
    rewritten = list(read_rows(config_file(batched, "rewritten")))
    assert rewritten and all(row["provenance"][-1]["batch"] in provider.batches for row in rewritten)
    assert {row["provenance"][-1]["batch"] for row in read_rows(config_file(live, "rewritten"))} == {None}
    counts = stats_of(batched)
    assert counts["batches"]["submitted"] == len(provider.batches)
    assert counts["batches"]["items"] == sum(provider.submitted.values())
    assert counts["requests"] == counts["batches"]["items"] and counts["completion_tokens"] > 0
    assert stats_of(again)["cache_hits"] == counts["entered"]
    events = ledger_lines(batched)
    assert [e.get("submitted") or e.get("taken") for e in events] == [events[0]["submitted"]] * 2  # sent, taken
    assert sorted(events[0]["custom_ids"]) == sorted(provider.submitted)


def test_a_run_with_every_stage_by_batch_probes_no_endpoint_and_starts_no_server(tmp_path, key):
    """Its one --endpoint listens nowhere: a probe or a live request would stop the run. Without --endpoint,
    no embedded server is started (its log would be in the output folder) and nothing is asked again."""
    live, batched, bare = tmp_path / "live", tmp_path / "batched", tmp_path / "bare"
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        assert generate(arguments(live, tgi.url)) == 0
        stages = {}
        for stage in ("backtranslate", "curate", "rewrite"):
            stages |= yaml.safe_load(batch_config(tmp_path, "openai", provider.url, stage=stage).read_text())
        config = tmp_path / "all.yaml"
        config.write_text(yaml.safe_dump(stages))
        assert generate(arguments(batched, "http://127.0.0.1:9", config)) == 0
        without_endpoint = arguments(bare, "", config)
        without_endpoint.remove("--endpoint")
        without_endpoint.remove("")
        assert generate([*without_endpoint, "--no-cache"]) == 0
    assert not (bare / ".bft" / "embedded-server.log").exists()
    assert len(provider.batches) == 6 and set(provider.submitted.values()) == {2}  # --no-cache: asked again
    for name in CONFIGS:
        assert rows(batched, name) == rows(live, name), name
        assert rows(bare, name) == rows(live, name), name


def test_a_run_killed_while_its_batch_is_pending_resumes_it_by_id_and_pays_nothing_twice(tmp_path, key):
    out = tmp_path / "out"
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        provider.hold = True  # the batch stays in progress until the test lets it go
        command = [
            sys.executable,
            "-m",
            "bft.generation.cli",
            *arguments(out, tgi.url, batch_config(tmp_path, "openai", provider.url)),
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: any("submitted" in e for e in ledger_lines(out)) or process.poll() is not None, "a batch")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        (pending,) = provider.batches
        assert ledger_lines(out)[0]["submitted"] == pending and provider.batches[pending]["status"] in (
            "validating",
            "in_progress",
        )

        provider.hold = False
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert list(provider.batches) == [pending]  # no batch submitted again
        assert set(provider.submitted.values()) == {1} and set(provider.answered.values()) == {1}

    rewritten = rows(out, "rewritten")
    assert rewritten and len({r[0] for r in rewritten}) == len(rewritten)  # each document once
    assert len(rewritten) == len(rows(out, "curated"))
    counts = stats_of(out)["batches"]
    assert counts["resumed"] == 1 and counts["submitted"] == 0 and counts["resumed_items"] == len(rewritten)
    assert ledger_lines(out)[-1]["taken"] == pending


def killed_while_pending(command: list[str], out: Path, provider: OpenAIBatchServer) -> str:
    """Run `command` until its batch is submitted, SIGKILL it; the batch's id (still pending at the provider)."""
    provider.hold = True
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any("submitted" in e for e in ledger_lines(out)) or process.poll() is not None, "a batch")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    provider.hold = False
    (pending,) = provider.batches
    return pending


def test_a_resumed_batch_stays_pending_until_a_run_journals_every_document_it_answers(tmp_path, key):
    """A rerun with a smaller --limit uses part of a resumed batch: the rest of its replies stay in the ledger
    for the run that asks for them, and are not paid again."""
    out = tmp_path / "out"
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        command = [*arguments(out, tgi.url, batch_config(tmp_path, "openai", provider.url))]
        limit = command.index("--limit") + 1
        pending = killed_while_pending([sys.executable, "-m", "bft.generation.cli", *command], out, provider)
        items = len(openai_lines(provider, pending))
        command[limit] = "2"
        assert generate(command) == 0
        assert 0 < len(rows(out, "rewritten")) < items
        assert not any("taken" in e for e in ledger_lines(out))  # its other replies are still to be used
        command[limit] = str(DOCUMENTS)
        assert generate(command) == 0
        assert list(provider.batches) == [pending] and set(provider.submitted.values()) == {1}
    assert len(rows(out, "rewritten")) == items
    assert ledger_lines(out)[-1] == ledger_lines(out)[-1] | {"taken": pending, "state": "ended"}


class WatchedBatchServer(OpenAIBatchServer):
    """The OpenAI batch test server, telling when its first request arrived (before it takes its lock)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.arrived = threading.Event()

    def _serve(self, handler, method: str) -> None:
        self.arrived.set()
        super()._serve(handler, method)


def test_a_run_that_stops_lets_a_submit_in_flight_end_and_writes_its_ledger_line(tmp_path, key, capsys):
    """The live endpoint refuses the key (the run stops) while a batch is being uploaded: the upload is not cut
    mid-POST, its batch is created and in the ledger, so a rerun resumes it instead of paying for it twice."""
    last = list(read_corpus(str(DEMO_CORPUS)))[DOCUMENTS - 1]
    out, said = tmp_path / "out", []
    with WatchedBatchServer() as provider:

        def script(request: SeenRequest) -> Reply | Fault:
            if prompt_kind(request.prompt) == "backtranslate" and last.text[:60] in request.prompt:
                provider.arrived.wait(60)  # a batch of another document is on its way to the provider
                return Fault(401, "Invalid API key", "authentication_error")
            return paper_model(request)

        with TGITestServer(script) as tgi:
            config = batch_config(tmp_path, "openai", provider.url, batch={"max_requests": 1})
            with provider.lock:  # the provider takes no request until the run is stopping
                run = Background(arguments(out, tgi.url, config))

                def stopping() -> bool:
                    said.append(capsys.readouterr().out)
                    return "waiting for a batch submit in flight" in "".join(said) or not run.thread.is_alive()

                wait_for(stopping, "the run to stop")
            assert run.join() == 2
    submitted = [line["submitted"] for line in ledger_lines(out) if "submitted" in line]
    assert submitted and sorted(submitted) == sorted(provider.batches)


def test_a_run_that_stops_sends_no_retry_in_a_new_batch(tmp_path, key):
    """Every rewrite is refused for one reason (the run stops: a setting every request meets) but the last item
    of the batch errored: its retry would be a new paid batch for a run that is stopping, so none is sent."""
    out = tmp_path / "out"
    words = "Invalid 'temperature': decimal above maximum value."

    def refuse_every_rewrite(request: SeenRequest) -> Reply | Fault:
        if prompt_kind(request.prompt) == "rewrite":
            return Fault(400, words, "invalid_request_error")
        return paper_model(request)

    with TGITestServer() as tgi, OpenAIBatchServer(refuse_every_rewrite) as provider:
        provider.hold = True
        run = Background(arguments(out, tgi.url, batch_config(tmp_path, "openai", provider.url)))
        wait_for(lambda: provider.batches, "the first batch")
        (first,) = provider.batches
        items = openai_lines(provider, first)
        assert len(items) > 3  # three refusals in a row stop the run before the last item is answered
        with provider.lock:
            provider.fail_ids = {items[-1]}
            provider.hold = False
        assert run.join() == 2
    assert list(provider.batches) == [first]


def test_a_stage_switched_to_live_with_batches_not_collected_is_refused(tmp_path, key, capsys):
    """A rerun with rewrite on send: live would abandon the batch an earlier run paid for: refused, naming it
    and both ways out; once the ledger is moved aside, the stage goes live."""
    out = tmp_path / "out"
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        command = arguments(out, tgi.url, batch_config(tmp_path, "openai", provider.url))
        pending = killed_while_pending([sys.executable, "-m", "bft.generation.cli", *command], out, provider)
        live = tmp_path / "live.yaml"  # the same settings, rewrite sent live
        live.write_text(yaml.safe_dump({"rewrite": {"send": "live", "model": "test-batch-model"}}))
        tgi.requests.clear()
        capsys.readouterr()
        assert generate(arguments(out, tgi.url, live)) == 2
        assert tgi.requests == []
        err = capsys.readouterr().err
        assert pending in err and "Switch rewrite back to send: batch" in err and "aside to send live" in err
        batch_ledger(out, "rewrite").rename(tmp_path / "ledger-aside.jsonl")
        assert generate(arguments(out, tgi.url, live)) == 0
        assert [r for r in tgi.requests if prompt_kind(r.prompt) == "rewrite"]
    assert len(rows(out, "rewritten")) == len(openai_lines(provider, pending))


def test_expired_and_errored_items_go_again_in_a_new_batch_and_are_counted(tmp_path, key):
    out = tmp_path / "out"
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        provider.hold = True
        run = Background(arguments(out, tgi.url, batch_config(tmp_path, "openai", provider.url)))
        wait_for(lambda: provider.batches, "the first batch")
        (first,) = provider.batches
        items = openai_lines(provider, first)
        with provider.lock:  # the first item errors (a 500), the second is answered, the others expire
            provider.fail_ids = {items[0]}
            provider.expire(first, answered=2)
            provider.fail_ids = set()
            provider.hold = False
        assert run.join() == 0

    assert len(provider.batches) == 2
    second = next(batch for batch in provider.batches if batch != first)
    assert sorted(openai_lines(provider, second)) == sorted([items[0], *items[2:]])
    assert provider.submitted[items[1]] == 1 and all(provider.submitted[item] == 2 for item in items[2:])
    counts = stats_of(out)
    assert counts["retries_by_cause"] == {"batch_errored": 1, "batch_expired": len(items) - 2}
    assert counts["batches"]["failed_items"] == {"errored": 1, "expired": len(items) - 2}
    assert counts["batches"]["submitted"] == 2 and counts["kept"] == len(items)


def test_a_failed_batch_is_sent_again_whole(tmp_path, key):
    out = tmp_path / "out"
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        provider.hold = True
        run = Background(arguments(out, tgi.url, batch_config(tmp_path, "openai", provider.url)))
        wait_for(lambda: provider.batches, "the first batch")
        (first,) = provider.batches
        with provider.lock:
            provider.fail(first)
            provider.hold = False
        assert run.join() == 0

    items = openai_lines(provider, first)
    assert len(provider.batches) == 2 and all(provider.submitted[item] == 2 for item in items)
    counts = stats_of(out)
    assert counts["batches"]["failed"] == 1 and counts["retries_by_cause"] == {"batch_failed": len(items)}
    assert counts["kept"] == len(items)
    assert [e.get("state") for e in ledger_lines(out) if "taken" in e] == ["failed", "ended"]


def test_rewrite_by_anthropic_batch_gives_the_rows_of_a_live_run(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, anthropic_batch.API_KEY)
    live, batched = tmp_path / "live", tmp_path / "batched"
    with TGITestServer() as tgi, AnthropicBatchServer() as provider:
        assert generate(arguments(live, tgi.url)) == 0
        sampling = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 2048}  # Anthropic takes one of the two
        config = batch_config(tmp_path, "anthropic", provider.url, sampling=sampling)
        assert generate(arguments(batched, tgi.url, config)) == 0
        assert set(provider.submitted.values()) == {1}
    assert rows(batched, "rewritten") == rows(live, "rewritten")
    assert stats_of(batched)["batches"]["submitted"] == 1


def test_a_full_batch_is_sent_at_once_and_the_rest_when_nothing_more_can_come(tmp_path, key):
    out = tmp_path / "out"
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        config = batch_config(tmp_path, "openai", provider.url, batch={"max_requests": 4})
        assert generate(arguments(out, tgi.url, config)) == 0
    assert [len(openai_lines(provider, batch)) for batch in provider.batches] == [4, DOCUMENTS - 4]
    assert stats_of(out)["batches"]["submitted"] == 2 and len(rows(out, "rewritten")) == DOCUMENTS


def refusing(words: str, status: int = 400, once: bool = False):
    """The paper model, but the provider refuses the rewrite of `SECOND` with `words` (only once: `once`)."""
    refused: list[str] = []

    def script(request: SeenRequest) -> Reply | Fault:
        mine = prompt_kind(request.prompt) == "rewrite" and SECOND.text[:60] in request.prompt
        if mine and not (once and refused):
            refused.append(request.prompt)
            return Fault(status, words, "invalid_request_error")
        return paper_model(request)

    return script


def test_an_item_the_provider_refuses_is_rejected_with_its_words(tmp_path, key):
    out = tmp_path / "out"
    with (
        TGITestServer() as tgi,
        OpenAIBatchServer(refusing("Your prompt was flagged by the safety system.")) as provider,
    ):
        assert generate(arguments(out, tgi.url, batch_config(tmp_path, "openai", provider.url))) == 0
    (rejected,) = read_rows(config_file(out, "rejected"))
    assert (rejected["id"], rejected["stage"], rejected["reason"]) == (SECOND.id, "rewrite", "input_invalid")
    assert "flagged by the safety system" in rejected["provenance"][-1]["raw_output"]
    assert rejected["provenance"][-1]["batch"] in provider.batches
    assert len(provider.batches) == 1 and stats_of(out)["batches"]["failed_items"] == {"refused": 1}


def test_a_batch_file_the_provider_refuses_whole_stops_the_run_and_journals_no_item(tmp_path, key, capsys):
    """A bad `completion_window` is a setting to fix: the run stops naming it; the items are not refused."""
    out = tmp_path / "out"
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        config = batch_config(tmp_path, "openai", provider.url, batch={"completion_window": "48h"})
        assert generate(arguments(out, tgi.url, config)) == 2
        assert provider.batches == {}
    err = capsys.readouterr().err
    assert "refused stage rewrite's batch" in err and "Invalid 'completion_window'" in err
    assert not (journal_dir(out) / "rewrite.jsonl").exists() or not list(
        Journal(journal_dir(out) / "rewrite.jsonl").entries()
    )


def test_a_dry_run_probe_of_a_batch_stage_is_refused_before_any_request(tmp_path, key, capsys):
    """A probe would submit real, paid batches and wait on them for hours: refused, naming the stage."""
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        config = batch_config(tmp_path, "openai", provider.url)
        assert generate([*arguments(tmp_path / "out", tgi.url, config), "--dry-run", "--probe", "2"]) == 2
        assert tgi.requests == [] and provider.batches == {}
    assert "rewrite send by batch (send: batch)" in capsys.readouterr().err


def test_a_prompt_the_provider_calls_too_long_is_cut_and_sent_again_in_a_new_batch(tmp_path, key):
    out = tmp_path / "out"
    words = "This model's maximum context length is 60 tokens. However, your messages resulted in 400 tokens."
    with TGITestServer() as tgi, OpenAIBatchServer(refusing(words, once=True)) as provider:
        assert generate(arguments(out, tgi.url, batch_config(tmp_path, "openai", provider.url))) == 0
    assert len(provider.batches) == 2 and len(rows(out, "rewritten")) == DOCUMENTS
    assert stats_of(out)["truncated_to_fit"] == 1


def test_samples_of_one_pair_wait_on_the_same_batch(tmp_path, key):
    """curate asks two samples of each pair; both wait on a batch before it is sent (no batch of one)."""
    live, batched = tmp_path / "live", tmp_path / "batched"
    scoring = {"samples": 2, "score_mode": "parsed"}
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        both = tmp_path / "live.yaml"
        both.write_text(yaml.safe_dump({"curate": scoring}))
        assert generate(arguments(live, tgi.url, both)) == 0
        config = batch_config(tmp_path, "openai", provider.url, stage="curate", **scoring)
        assert generate(arguments(batched, tgi.url, config)) == 0
    (batch,) = provider.batches
    assert len(openai_lines(provider, batch)) == 2 * DOCUMENTS
    for name in CONFIGS:
        assert rows(batched, name) == rows(live, name), name


REFUSED = {  # a setting no batch run can follow -> what the message names
    "ray": (["--executor", "ray"], {}, "rewrite.send: batch runs on the local executor only"),
    "serve": ([], {"serve": {"engine": "vllm", "model": "m"}}, "bft would serve rewrite for nothing"),
    "vllm without python": ([], {"batch": {"api": "vllm", "url": ""}}, "needs batch.python"),
    "anthropic raw": ([], {"mode": "raw", "batch": {"api": "anthropic"}}, "Anthropic's Messages API has no raw"),
    "vllm raw": (
        [],
        {"mode": "raw", "batch": {"api": "vllm", "url": "", "python": sys.executable, "model_path": "m"}},
        "run_batch cannot run mode 'raw'",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_what_a_batch_run_cannot_do_is_refused_before_any_request(tmp_path, key, capsys, case):
    flags, rewrite, words = REFUSED[case]
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        config = batch_config(tmp_path, "openai", provider.url, **rewrite)
        assert generate(arguments(tmp_path / "out", tgi.url, config) + flags) == 2
        assert tgi.requests == [] and provider.batches == {}
    assert words in capsys.readouterr().err


def test_a_missing_api_key_is_named_before_any_request(tmp_path, capsys):
    with TGITestServer() as tgi, OpenAIBatchServer() as provider:
        assert generate(arguments(tmp_path / "out", tgi.url, batch_config(tmp_path, "openai", provider.url))) == 2
        assert tgi.requests == [] and provider.batches == {}
    assert f"needs an API key in ${KEY_ENV} (rewrite.batch.token_env), which is not set" in capsys.readouterr().err


def test_an_items_custom_id_is_the_one_earlier_bft_gave_it_so_a_resumed_batch_is_found():
    """A pending batch is resumed by its items' custom_ids: a setting that bft added later (`stop_on_repeat`,
    never sent to the provider) must not change them at its default, or an upgraded bft would submit and pay
    for the same requests again. The id below is the one bft gave before the setting existed."""
    sampling = SamplingConfig(temperature=0.7, max_tokens=256, stop=["[/RES]"], seed=0)
    item = custom_id("rewrite", "doc-1", 0, Request("chat", "Hello"), "gpt-4o", sampling)
    assert item == "rewrite-bb0e4f49443794d9-0-365cc7b1dcffccc4033c8ee4"
