"""vLLM's offline `run_batch` as bft's third batch API (`endpoints/batches/vllm_offline.py`).

The slow test runs the real run_batch of vLLM 0.32's CPU build (`.venv-vllm`, as `test_real_vllm.py` does) on
the converted SmolLM2 checkpoint: a chat file is answered and read back as live replies are, a second job
queues behind it, a queued job is canceled, a job on a missing model fails with vLLM's reason, and a new
instance on the same folder finds the finished batch. The shapes it follows are those of vLLM's source,
`vllm/entrypoints/launchers/run_batch.py` (`BatchRequestOutput`, `BatchProgressTracker`, `run_request`).

The fast tests need no vLLM: the restart rules read the files a job leaves (written here, with output lines
as the real run_batch wrote them), and a job waiting for the machine's lock (held here) never reaches vLLM,
so queueing, cancel and close are checked on real processes; a job whose Python has no vLLM fails for real.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.batches.base import BatchItem, BatchStatus, ItemFailure
from bft.generation.endpoints.batches.openai import request_line
from bft.generation.endpoints.batches.vllm_offline import (
    QUEUED,
    STARTED,
    BatchFiles,
    VLLMOfflineBatches,
    batch_id_for,
    lock_held,
    pending_status,
    unsupported,
)
from bft.generation.endpoints.embedded import converted_checkpoint
from bft.generation.endpoints.processes import group_alive
from bft.generation.endpoints.protocols import ServedReply
from bft.generation.errors import ConfigError
from tests.servers.real_vllm import PYTHON

GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=24)
CPU_ARGS = ["--dtype", "float32", "--max-model-len", "4096"]  # as `vllm_server.py` runs the CPU build
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2"}
DEADLINE = 900.0  # seconds a real job may take on 2 busy cores (model load, compile, replies)


def chat(custom_id: str, text: str, top_n: int | None = None, max_tokens: int = 24) -> BatchItem:
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=max_tokens)
    return BatchItem(custom_id, "chat", text, "smollm2", sampling, top_n)


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], deadline: float = DEADLINE) -> None:
    """Poll `check` until it is true; fail naming `what` past `deadline` seconds."""
    ends = time.monotonic() + deadline
    while not await check():
        assert time.monotonic() < ends, f"{what}: not after {deadline:.0f} s"
        await asyncio.sleep(0.5)


async def ended(api: VLLMOfflineBatches, batch_id: str) -> BatchStatus:
    """The batch's status once it is no longer pending."""
    seen: list[BatchStatus] = []

    async def not_pending() -> bool:
        seen.append(await api.status(batch_id))
        return seen[-1].state != "pending"

    try:
        await wait_for(f"batch {batch_id}", not_pending)
    except AssertionError:
        raise AssertionError(f"{seen[-1]}\n{api.files(batch_id).log_tail(40)}") from None
    return seen[-1]


# -- the real run_batch ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_run_batch_answers_a_chat_file_queues_the_next_job_and_names_a_failed_ones_reason(tmp_path):
    if not PYTHON.exists():
        pytest.fail(f"the real vLLM is not installed at {PYTHON}: run `make vllm` (make test does it)")
    work = tmp_path / "batches" / "vllm"
    api = VLLMOfflineBatches(PYTHON, converted_checkpoint(), work, CPU_ARGS, CPU_ENV)
    missing = VLLMOfflineBatches(PYTHON, tmp_path / "no-such-model", work, CPU_ARGS, CPU_ENV)
    items = [
        chat("bread", "Name three kinds of bread."),
        chat("score", "Rate bread from 1 to 5. Answer with one digit.", top_n=5, max_tokens=3),
        chat("too-long", "word " * 5000, max_tokens=8),  # over the 4,096-token context: refused, alone
    ]

    async def scenario():
        first = await api.submit([api.line(item) for item in items], "test/chat")
        pids = [api.jobs[first].process.pid]
        log = api.files(first).log

        async def first_started() -> bool:
            return log.exists() and STARTED in log.read_text(errors="replace")

        await wait_for("the first job's turn", first_started)  # it holds the machine's lock from here on
        second = await missing.submit([api.line(items[0])], "test/missing-model")
        third = await api.submit([api.line(items[0])], "test/canceled")
        pids += [missing.jobs[second].process.pid, api.jobs[third].process.pid]

        async def third_queued() -> bool:
            return "queued" in (await api.status(third)).detail

        await wait_for("the third job queued", third_queued, 120)
        await api.cancel(third)
        canceled = await api.status(third)

        done = await ended(api, first)
        replies = await api.results(first)
        failed = await ended(missing, second)
        again = VLLMOfflineBatches(PYTHON, converted_checkpoint(), work, CPU_ARGS, CPU_ENV)  # a bft rerun
        found, found_replies = await again.status(first), await again.results(first)
        await api.close()
        await missing.close()
        return first, second, third, pids, canceled, done, replies, failed, found, found_replies

    first, second, third, pids, canceled, done, replies, failed, found, found_replies = asyncio.run(scenario())
    assert not any(group_alive(pid) for pid in pids)  # nothing of any job is left running

    assert done.state == "ended", done
    assert set(replies) == {"bread", "score", "too-long"}
    for custom_id in ("bread", "score"):
        reply = replies[custom_id]
        assert isinstance(reply, ServedReply), reply
        assert reply.text.strip() and reply.finish_reason in ("stop", "length")
        assert reply.usage["prompt_tokens"] > 0 and 0 < reply.usage["completion_tokens"] <= 24
        assert reply.model == str(converted_checkpoint())  # the loaded model, named by its path
    score = replies["score"]
    assert score.token_choices and len(score.token_choices) == score.usage["completion_tokens"]
    assert len(score.token_choices[0].top) == 5 and all(lp <= 0 for _, lp in score.token_choices[0].top)
    refused = replies["too-long"]
    assert isinstance(refused, ItemFailure) and refused.kind == "refused" and refused.status == 400
    assert "maximum context length is 4096 tokens" in refused.detail  # vLLM's own words, from its error line
    assert pending_status(api.files(first)).counts == {"completed": 3, "total": 3}  # its progress line, read

    assert QUEUED in api.files(second).log.read_text()  # it waited for the first job's end before loading
    assert canceled.state == "failed" and canceled.detail == "canceled"
    assert not lock_held(api.files(third).lock) and not api.files(third).output.exists()

    assert failed.state == "failed" and "run_batch exited with code 1" in failed.detail, failed
    assert "no-such-model" in failed.detail.partition(":\n")[2], failed.detail  # vLLM's reason, from its log

    assert found.state == "ended" and found_replies == replies


# -- the files a job leaves, read by a later bft ---------------------------------------------------------

# Output lines as the real run_batch (vLLM 0.32, CPU build) wrote them for a reply and for a refused request.
REPLY_LINE = {
    "id": "vllm-b8439a979c529ab9",
    "custom_id": "bread",
    "response": {
        "status_code": 200,
        "request_id": "vllm-batch-9a66b8a0749dd5f1",
        "body": {
            "id": "chatcmpl-92c744c310736920",
            "object": "chat.completion",
            "created": 1796598641,
            "model": "/root/.cache/bft/models/SmolLM2-135M-Instruct-0.1.2",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "1. **Bread with a yeast starter** - A classic example of a bread that is made with a starter,",
                        "refusal": None,
                        "annotations": None,
                        "audio": None,
                        "function_call": None,
                        "reasoning": None,
                    },
                    "logprobs": None,
                    "finish_reason": "length",
                    "stop_reason": None,
                    "token_ids": None,
                    "routed_experts": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": "vllm-0.32.0-a4792bf4",
            "usage": {
                "prompt_tokens": 36,
                "total_tokens": 60,
                "completion_tokens": 24,
                "prompt_tokens_details": None,
                "completion_tokens_details": None,
            },
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        },
    },
    "error": None,
}
REFUSED_LINE = {
    "id": "vllm-ad71dba1340c68c4",
    "custom_id": "too-long",
    "response": {"status_code": 400, "request_id": "vllm-batch-aa1635787f01a893", "body": None},
    "error": {
        "error": {
            "message": "This model's maximum context length is 4096 tokens. However, your prompt contains at least 4097 input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=4097)",
            "type": "BadRequestError",
            "param": "input_tokens",
            "code": 400,
        }
    },
}


def written(folder: Path, items: list[BatchItem], label: str = "run/backtranslate") -> BatchFiles:
    """A batch's request file, written as `submit` writes it (what an earlier bft left)."""
    api = VLLMOfflineBatches(sys.executable, "model", folder)
    lines = [api.line(item) for item in items]
    files = BatchFiles(folder, batch_id_for(lines, label))
    folder.mkdir(parents=True, exist_ok=True)
    files.input.write_bytes(b"".join(lines))
    return files


def status_and_results(folder: Path, batch_id: str):
    """What a new instance (a bft rerun) says of the batch."""

    async def ask():
        api = VLLMOfflineBatches(sys.executable, "model", folder)
        status = await api.status(batch_id)
        return status, (await api.results(batch_id)) if status.state == "ended" else None

    return asyncio.run(ask())


def output(files: BatchFiles, *objs: dict) -> None:
    files.output.write_text("".join(json.dumps(obj) + "\n" for obj in objs))


def test_a_finished_output_is_found_by_a_new_instance_and_read_as_live_replies(tmp_path):
    files = written(tmp_path, [chat("bread", "Name three kinds of bread."), chat("too-long", "word " * 5000)])
    output(files, REPLY_LINE, REFUSED_LINE)  # the bft that started the job stopped before it read them
    status, results = status_and_results(tmp_path, files.batch_id)
    assert status.state == "ended" and status.counts == {"total": 2}
    reply = results["bread"]
    assert isinstance(reply, ServedReply) and reply.text.startswith("1. **Bread with a yeast starter**")
    assert reply.finish_reason == "length" and reply.usage["completion_tokens"] == 24
    refused = results["too-long"]  # vLLM's error in `error`, its status in `response`: read as OpenAI's
    assert refused == ItemFailure("refused", refused.detail, 400) and "maximum context length" in refused.detail


def test_the_same_lines_submitted_again_reuse_a_queued_job_but_run_an_ended_one_again(tmp_path):
    """A rerun after a crash finds the job still queued (no second job for the file); a retry of the same items
    after their batch ended must not read the old answers: the old output is cleared and the job runs again."""
    item = chat("bread", "Name three kinds of bread.")
    files = written(tmp_path, [item])
    machine = tmp_path / "machine.lock"
    api = VLLMOfflineBatches(sys.executable, "model", tmp_path, machine_lock=machine)
    line = api.line(item)

    async def submit_twice():
        with files.lock.open("w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # the earlier run's job, still queued
            pending = await api.submit([line], "run/backtranslate")
            started_while_pending = dict(api.jobs)
        files.exit.write_text("0")
        output(files, REPLY_LINE)  # the job ended with its answers, read by the earlier run
        with machine.open("w") as busy:
            fcntl.flock(busy, fcntl.LOCK_EX)  # the new job queues and never reaches vLLM
            again = await api.submit([line], "run/backtranslate")
            status = await api.status(again)
            await api.close()
        return pending, started_while_pending, again, status

    pending, started_while_pending, again, status = asyncio.run(submit_twice())
    assert pending == files.batch_id and started_while_pending == {}
    assert again == files.batch_id and status.state == "pending"  # a new job, not the ended one's output
    assert not files.output.exists() and not files.exit.exists()


def test_a_batch_whose_process_is_gone_without_output_failed_with_the_end_of_its_log(tmp_path):
    files = written(tmp_path, [chat("bread", "Name three kinds of bread.")])
    files.log.write_text(
        f"{STARTED}: python -m vllm...\nLoading weights\nRunning batch:   0% Completed | 0/1 [00:00<?]\n"
    )
    status, _ = status_and_results(tmp_path, files.batch_id)  # no exit status: killed with the bft that ran it
    assert status.state == "failed" and "gone without its output" in status.detail
    assert status.detail.endswith("Loading weights\nRunning batch:   0% Completed | 0/1 [00:00<?]")


def test_an_output_file_cut_short_or_a_non_zero_exit_is_not_a_finished_batch(tmp_path):
    items = [chat("bread", "Name three kinds of bread."), chat("too-long", "word " * 5000)]
    files = written(tmp_path, items)
    files.output.write_text(json.dumps(REPLY_LINE) + "\n" + json.dumps(REFUSED_LINE)[:80])  # killed mid-write
    assert status_and_results(tmp_path, files.batch_id)[0].state == "failed"
    output(files, REPLY_LINE)  # a line short
    assert status_and_results(tmp_path, files.batch_id)[0].state == "failed"
    output(files, REPLY_LINE, REFUSED_LINE)
    files.exit.write_text("1")
    files.log.write_text("RuntimeError: Engine core initialization failed\n")
    status, _ = status_and_results(tmp_path, files.batch_id)
    assert status.state == "failed" and status.detail.startswith("run_batch exited with code 1; the end of")
    assert status.detail.endswith("RuntimeError: Engine core initialization failed")


def test_a_live_job_is_pending_with_its_progress_for_a_new_instance_too(tmp_path):
    files = written(tmp_path, [chat("bread", "Name three kinds of bread.")])
    files.log.write_text(
        f"{STARTED}: python -m vllm...\nRunning batch:   0% Completed | 0/3 [00:00<?, ?req/s]\n"
        "Running batch:  67% Completed | 2/3 [00:03<00:01,  1.20s/req]\n"  # as run_batch's tqdm writes them
    )
    with files.lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the job's first process holds it while it lives
        status, _ = status_and_results(tmp_path, files.batch_id)
    assert status.state == "pending" and status.counts == {"completed": 2, "total": 3}
    assert status_and_results(tmp_path, files.batch_id)[0].state == "failed"  # its process gone: lock free


def test_a_second_job_queues_until_the_machine_is_free_and_cancel_or_close_end_it(tmp_path):
    machine = tmp_path / "machine.lock"
    api = VLLMOfflineBatches(sys.executable, "model", tmp_path / "work", machine_lock=machine)
    lines = [api.line(chat("bread", "Name three kinds of bread."))]

    async def scenario():
        with machine.open("w") as busy:
            fcntl.flock(busy, fcntl.LOCK_EX)  # another job holds the machine
            first = await api.submit(lines, "run/backtranslate")
            second = await api.submit(lines, "run/curate")
            pids = [api.jobs[first].process.pid, api.jobs[second].process.pid]

            async def both_queued() -> bool:
                statuses = [await api.status(batch_id) for batch_id in (first, second)]
                return all("queued" in status.detail for status in statuses)

            await wait_for("both jobs queued", both_queued, 60)
            rerun = await VLLMOfflineBatches(sys.executable, "model", tmp_path / "work").status(first)
            await api.cancel(first)
            canceled = await api.status(first)
            await api.close()  # the run stops: what is still queued or running ends
            closed = await api.status(second)
        return pids, rerun, canceled, closed

    pids, rerun, canceled, closed = asyncio.run(scenario())
    assert rerun.state == "pending"  # alive, though started by another instance
    assert canceled.state == "failed" and canceled.detail == "canceled"
    assert closed.state == "failed" and "gone without its output" in closed.detail
    assert not any(group_alive(pid) for pid in pids)


def test_a_job_that_fails_is_failed_with_its_reason_and_runs_again_when_submitted_again(tmp_path):
    """bft's own Python has no vLLM: the job fails as a real one does, with Python's words in its log."""
    api = VLLMOfflineBatches(sys.executable, "model", tmp_path, machine_lock=tmp_path / "machine.lock")
    lines = [api.line(chat("bread", "Name three kinds of bread."))]

    async def twice():
        first = await api.submit(lines, "run/backtranslate")
        failed = await ended(api, first)
        again = await api.submit(lines, "run/backtranslate")
        return first, failed, again, await ended(api, again)

    first, failed, again, failed_again = asyncio.run(twice())
    assert failed.state == "failed" and failed.detail.startswith("run_batch exited with code 1")
    assert "No module named 'vllm'" in failed.detail
    assert again == first and failed_again.state == "failed"  # started again: a failed batch is sent again
    assert (tmp_path / f"{first}.previous.log").exists()


def test_what_run_batch_cannot_serve_is_refused_before_any_line_is_written():
    sampling = SamplingConfig()
    assert "/v1/completions" in unsupported("raw", None, sampling)
    assert unsupported("chat", 5, sampling) is None and unsupported("chat", None, sampling) is None
    assert "--max-logprobs 25" in unsupported("chat", 25, sampling)
    api = VLLMOfflineBatches(sys.executable, "model", "unused", args=["--max-logprobs", "30"])
    assert api.unsupported("chat", 25, sampling) is None
    with pytest.raises(ConfigError, match="batch item r1: .*mode 'raw'"):
        api.line(BatchItem("r1", "raw", "[INST] hi [/INST]", None, sampling))


def test_a_file_that_would_fail_the_whole_job_is_refused_before_it_is_written(tmp_path):
    """run_batch stops at the first line it cannot read, with no output for any line; two lines of one
    custom_id would leave bft unable to tell whose reply is whose."""
    api = VLLMOfflineBatches(sys.executable, "model", tmp_path / "work")
    line = api.line(chat("bread", "Name three kinds of bread."))
    raw = request_line(BatchItem("r1", "raw", "[INST] hi [/INST]", None, SamplingConfig()))
    with pytest.raises(ValueError, match="line 2: custom_id 'bread' twice"):
        asyncio.run(api.submit([line, line], "run/backtranslate"))
    with pytest.raises(ValueError, match="line 2: vLLM's run_batch serves /v1/chat/completions requests only"):
        asyncio.run(api.submit([line, raw], "run/backtranslate"))
    assert not (tmp_path / "work").exists() and api.jobs == {}


def test_a_line_names_no_model_and_a_batch_id_is_a_safe_stable_file_name():
    api = VLLMOfflineBatches(sys.executable, "model", "unused")
    line = json.loads(api.line(chat("bread", "Name three kinds of bread.")))
    assert line["url"] == "/v1/chat/completions" and "model" not in line["body"]  # the loaded model answers
    lines = [api.line(chat("bread", "Name three kinds of bread."))]
    batch_id = batch_id_for(lines, "out dir/../backtranslate #2")
    assert batch_id == batch_id_for(lines, "out dir/../backtranslate #2") != batch_id_for(lines, "other")
    assert "/" not in batch_id and batch_id.startswith("out-dir-backtranslate-2-")


def test_a_missing_python_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="batch.python: no Python for vLLM at"):
        VLLMOfflineBatches(tmp_path / "nowhere" / "python", "model", tmp_path)
