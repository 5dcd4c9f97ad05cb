"""vLLM's offline `run_batch` as a batch API: a stage's request file run as one job on this machine, no server.

`python -m vllm.entrypoints.openai.run_batch -i IN -o OUT --model M [engine args]` reads OpenAI's request
file format and writes OpenAI's output format, so the lines are `openai.request_line`'s and the results are
read by `openai.read_output_line`. What this module follows, from vLLM 0.32's source
(`vllm/entrypoints/openai/run_batch.py`, which runs `vllm/entrypoints/launchers/run_batch.py`):

- arguments: `-i/--input-file` and `-o/--output-file` (local paths or http(s) URLs), then every engine
  argument of `vllm serve` (`AsyncEngineArgs`): the user's `args` are passed through as given;
- urls: of the generation routes only `/v1/chat/completions` (`BatchRequestInput.check_type_for_url`, the
  `endpoint_registry`); a `/v1/completions` body validates as none of the accepted bodies, and a line that
  does not validate (`BatchRequestInput.model_validate_json`, uncaught) ends the whole job with no output
  at all. So raw mode is refused up front (`unsupported`), and every line is checked before a job starts;
- output: one `BatchRequestOutput` a line, `{"id", "custom_id", "response": {"status_code", "request_id",
  "body"}, "error"}`, written only once every request has ended (`write_local_file`, not atomically). A
  request the engine refused has `body` null, its status in `status_code` and vLLM's `ErrorResponse`
  (`{"error": {message, type, param, code}}`) or a plain message in `error`; `vllm_line_as_openai` moves
  it where OpenAI's error lines carry it (`response.body`) before `read_output_line` reads it;
- progress: a tqdm line `Running batch: 50% Completed | 2/4 [...]` on stderr at most every 5 s
  (`BatchProgressTracker`), read back into the status's counts;
- a model name: a request without one is served by the loaded model (`serve/engine/serving.py`
  `_is_model_supported`), so the stage's model name is not sent (one job serves exactly one model);
- limits: none are documented. The job reads its whole file, submits every line at once and keeps every
  reply in memory until it writes them all at the end, so a batch is bounded by memory and by what a crash
  loses (all of it). `LIMITS` are OpenAI's (the same file format, so a stage is split the same way
  whichever batch API it uses): generous for memory, and hours of work for one GPU at most.

A job loads a model, so one runs at a time on the machine: each job waits for a lock file (`MACHINE_LOCK`)
before it starts vLLM, and a second submit queues behind the first. Each job runs under the process-group
keeper of `processes.py`, dies with the bft that started it, and leaves its files in the working folder
(the run passes `OUT/.bft/batches/vllm/`), named by the batch id: `ID.input.jsonl`, `ID.output.jsonl`,
`ID.log`, `ID.exit` (its exit status, once it ended), `ID.lock` (held while it is queued or runs) and
`ID.canceled`. A bft rerun reads them: a complete output file is an ended batch, a batch whose process is
gone without one failed. The same lines submitted again reuse a job only while it is queued or runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.batches.base import BatchItem, BatchLimits, BatchStatus, ItemFailure, check_within
from bft.generation.endpoints.batches.openai import CHAT_URL, LIMITS, read_output_line, request_line
from bft.generation.endpoints.processes import GROUP_KEEPER, ServerProcess
from bft.generation.endpoints.protocols import ServedReply
from bft.generation.errors import ConfigError

RUN_BATCH = "vllm.entrypoints.openai.run_batch"  # `python -m` it: the CPU build has no `vllm` distribution
DEFAULT_MAX_LOGPROBS = 20  # vLLM's `--max-logprobs` default (`config/model.py` ModelConfig.max_logprobs)
MACHINE_LOCK = Path(tempfile.gettempdir()) / f"bft-vllm-run-batch-{os.getuid()}.lock"
LOG_TAIL_LINES = 12  # lines of a failed job's log given in its status
QUEUED, STARTED = "bft: queued", "bft: run_batch started"
PROGRESS_RE = re.compile(r"Running batch: *\d+% Completed \| *(\d+)/(\d+)")
# The job's first process, in vLLM's Python: holds ID.lock while it lives (a later bft finds the job alive),
# waits for the machine's lock (one model loaded at a time), runs run_batch and writes its exit status.
QUEUE_THEN_RUN = f"""
import fcntl, os, subprocess, sys
own, machine, exit_path, *command = sys.argv[1:]
held = os.open(own, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(held, fcntl.LOCK_EX)
turn = os.open(machine, os.O_RDWR | os.O_CREAT, 0o644)
try:
    fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("{QUEUED}: another run_batch runs on this machine (" + machine + "); waiting for it to end", flush=True)
    fcntl.flock(turn, fcntl.LOCK_EX)
print("{STARTED}: " + " ".join(command), flush=True)
code = subprocess.call(command)
code = code if code >= 0 else 128 - code
with open(exit_path + ".tmp", "w") as file:
    file.write(str(code))
os.replace(exit_path + ".tmp", exit_path)
sys.exit(code)
"""


def unsupported(
    mode: str, top_n: int | None, sampling: SamplingConfig, max_logprobs: int = DEFAULT_MAX_LOGPROBS
) -> str | None:
    """Why a stage with these settings cannot run through `run_batch`, or None. Raw prompts: run_batch serves
    no `/v1/completions` (and one such line fails the whole job); token alternatives past `--max-logprobs`:
    vLLM refuses every such request. Nothing in `sampling` is refused (it is sent as live requests send it)."""
    del sampling  # every field of SamplingConfig is a field of vLLM's ChatCompletionRequest
    if mode != "chat":
        return (
            f"vLLM's run_batch cannot run mode {mode!r}: it serves /v1/chat/completions only, not the "
            "/v1/completions that raw prompts need; use mode chat, or send: live to a vLLM server"
        )
    if top_n is not None and top_n > max_logprobs:
        return (
            f"vLLM's run_batch refuses top_n {top_n}: its --max-logprobs is {max_logprobs}; add "
            f"'--max-logprobs {top_n}' to batch.args"
        )
    return None


def vllm_line_as_openai(obj: dict[str, Any]) -> dict[str, Any]:
    """A run_batch output line in OpenAI's shape: a refused request's error moved from `error` (vLLM) into
    `response.body` (where OpenAI's error file has it), so `read_output_line` reads its status and message."""
    response, error = obj.get("response"), obj.get("error")
    if not isinstance(response, dict) or response.get("body") is not None or error is None:
        return obj
    body = error if isinstance(error, dict) and "error" in error else {"error": str(error)}
    return {**obj, "response": {**response, "body": body}, "error": None}


def batch_id_for(lines: list[bytes], label: str) -> str:
    """A batch's id: the label made safe as a file name, and a digest of the label and lines, so that the same
    lines submitted again while their job is queued or runs (a run that stopped before it recorded the id)
    find that job instead of starting a second one."""
    digest = hashlib.sha256(label.encode() + b"\0" + b"".join(lines)).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")[:40]
    return f"{slug}-{digest}" if slug else f"batch-{digest}"


def max_logprobs_of(args: list[str]) -> int:
    """The `--max-logprobs` that `args` give vLLM, or its default."""
    for index, arg in enumerate(args):
        value = arg.partition("=")[2] if arg.startswith("--max-logprobs=") else None
        if arg == "--max-logprobs" and index + 1 < len(args):
            value = args[index + 1]
        if value is not None:
            with contextlib.suppress(ValueError):
                return int(value)
    return DEFAULT_MAX_LOGPROBS


def lock_held(path: Path) -> bool:
    """Whether a process holds the flock on `path` (a job's process, queued or running, holds its own)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(descriptor)  # (closing releases a lock taken here)
    return False


@dataclass(frozen=True)
class BatchFiles:
    """The files of one batch in the working folder."""

    folder: Path
    batch_id: str

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.batch_id}.{suffix}"

    @property
    def input(self) -> Path:
        return self.path("input.jsonl")

    @property
    def output(self) -> Path:
        return self.path("output.jsonl")

    @property
    def log(self) -> Path:
        return self.path("log")

    @property
    def exit(self) -> Path:
        return self.path("exit")

    @property
    def lock(self) -> Path:
        return self.path("lock")

    @property
    def canceled(self) -> Path:
        return self.path("canceled")

    def custom_ids(self) -> list[str]:
        """The custom_ids of the request file, in order."""
        return [json.loads(line)["custom_id"] for line in self.input.read_bytes().split(b"\n") if line.strip()]

    def output_lines(self) -> dict[str, dict[str, Any]] | None:
        """The output file's lines by custom_id (None: no file). run_batch writes the file in one go at the end,
        not atomically: a job killed while writing leaves part of it, its last line cut short and skipped here,
        so `complete` finds that item missing."""
        try:
            raw = self.output.read_bytes()
        except FileNotFoundError:
            return None
        found: dict[str, dict[str, Any]] = {}
        for line in raw.split(b"\n"):  # newlines only: a text may hold U+2028
            try:
                obj = json.loads(line) if line.strip() else None
            except ValueError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("custom_id"), str):
                found[obj["custom_id"]] = obj
        return found

    def complete(self) -> bool:
        """Whether the output file has a line for every request."""
        found = self.output_lines()
        return found is not None and set(self.custom_ids()) <= found.keys()

    def exit_code(self) -> int | None:
        """The job's exit status, once its run_batch ended (None: still running, or killed)."""
        try:
            return int(self.exit.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the job's log (carriage returns of progress bars read as line ends)."""
        try:
            with self.log.open("rb") as file:
                file.seek(max(0, file.seek(0, os.SEEK_END) - 64_000))
                text = file.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        kept = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
        return "\n".join(kept[-lines:])


class RunBatchProcess(ServerProcess):
    """One run_batch job under the process-group keeper: it and every process it starts end together, when
    it exits, when `stop` is called, or when the bft that started it dies (the keeper's death signal)."""

    what = "vLLM run_batch"

    def __init__(self, batch_id: str, command: list[str], env: dict[str, str], log_path: Path):
        self.batch_id, self.command, self.env, self.log_path = batch_id, command, env, log_path
        self.process = None

    @property
    def url(self) -> str:  # registered under this name, as servers are by URL (`processes.server_exit`)
        return f"run_batch:{self.batch_id}"

    def start(self) -> None:
        keeper = ["sh", "-c", GROUP_KEEPER, "vllm-run-batch", *self.command]
        self.launch(keeper, self.env, self.log_path, signal_number=signal.SIGTERM)  # the keeper ends the group


class VLLMOfflineBatches:
    """vLLM's `run_batch` run by `python` (a Python with vLLM) on `model` (a folder or a Hub id), with `args`
    (any other engine argument, passed through), its files in `folder`."""

    name = "vllm"

    def __init__(
        self,
        python: str | Path,
        model: str | Path,
        folder: str | Path,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,  # added to the job's environment (VLLM_CPU_KVCACHE_SPACE, ...)
        max_requests: int | None = None,
        max_bytes: int | None = None,
        machine_lock: Path = MACHINE_LOCK,
        stop_grace: float = 30.0,  # seconds a stopped job has to end before it is killed
    ):
        self.python = Path(python)
        if not self.python.exists():
            raise ConfigError(f"batch.python: no Python for vLLM at {self.python} (make vllm installs one)")
        self.model = str(model)
        self.folder = Path(folder)
        self.args = list(args or [])
        self.env = dict(env or {})
        self.limits = BatchLimits(max_requests or LIMITS.max_requests, max_bytes or LIMITS.max_bytes)
        self.machine_lock = machine_lock
        self.stop_grace = stop_grace
        self.max_logprobs = max_logprobs_of(self.args)
        self.jobs: dict[str, RunBatchProcess] = {}  # the jobs this instance started and has not seen end, by id

    def __repr__(self) -> str:
        return f"VLLMOfflineBatches({self.model!r}, {str(self.folder)!r})"

    def unsupported(self, mode: str, top_n: int | None, sampling: SamplingConfig) -> str | None:
        """`unsupported` with this job's `--max-logprobs`."""
        return unsupported(mode, top_n, sampling, self.max_logprobs)

    def line(self, item: BatchItem) -> bytes:
        """The item's request line, without a model name (the job serves the one model it loads); a mode or
        top_n run_batch cannot serve is a `ConfigError` (one such line would fail the whole job)."""
        reason = self.unsupported(item.mode, item.top_n, item.sampling)
        if reason:
            raise ConfigError(f"batch item {item.custom_id}: {reason}")
        return request_line(dataclasses.replace(item, model=None))

    def files(self, batch_id: str) -> BatchFiles:
        return BatchFiles(self.folder, batch_id)

    # -- the protocol ----------------------------------------------------------------------------------

    async def submit(self, lines: list[bytes], label: str) -> str:
        """Write `lines` as the request file and start its job (queued behind any other on the machine). The
        same lines submitted again while their job is queued or runs return that batch (a rerun after a crash
        starts no second job); once it ended or failed, its files are cleared and the job runs again (a retry
        of the same items must not read the old answers)."""
        check_within(lines, self.limits, label)
        check_lines(lines, label)
        batch_id = batch_id_for(lines, label)
        files = self.files(batch_id)
        if files.input.exists() and (await self.status(batch_id)).state == "pending":
            return batch_id  # queued or running (a rerun after a crash): one job per file
        # ended or failed: a submit asks for new answers (a retry of the same items), so the job runs again
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in (files.output, files.exit, files.canceled):
            stale.unlink(missing_ok=True)
        if files.log.exists():
            files.log.replace(files.path("previous.log"))
        partial = files.path("input.jsonl.tmp")
        partial.write_bytes(b"".join(lines))
        partial.replace(files.input)
        job = RunBatchProcess(batch_id, self._command(files), self._environment(), files.log)
        # started from the event loop's own thread: the keeper's death signal follows the thread that started
        # it (prctl PR_SET_PDEATHSIG), so a worker thread's end would stop the job
        job.start()
        self.jobs[batch_id] = job
        return batch_id

    async def status(self, batch_id: str) -> BatchStatus:
        """pending while the job is queued or runs; ended once it exited 0 with a complete output file (or,
        its process gone, the output is complete); failed otherwise, with the end of its log."""
        files = self.files(batch_id)
        if not files.input.exists():
            return BatchStatus(batch_id, "failed", detail=f"no request file {files.input}: the batch is lost")
        if files.canceled.exists():
            return BatchStatus(batch_id, "failed", detail="canceled")
        job = self.jobs.get(batch_id)
        running = job.alive() if job is not None else lock_held(files.lock)
        if running:
            return pending_status(files)
        if job is not None:
            self.jobs.pop(batch_id)
            await asyncio.to_thread(job.stop, self.stop_grace)  # (reaps it, and ends any process it left)
        return ended_status(files)

    async def results(self, batch_id: str) -> dict[str, ServedReply | ItemFailure]:
        """Every item of an ended batch, read from run_batch's output file as OpenAI's output lines are."""
        files = self.files(batch_id)
        found = files.output_lines()
        if found is None:
            raise ValueError(f"batch {batch_id}: no complete output file {files.output} to read results from")
        results: dict[str, ServedReply | ItemFailure] = {}
        for custom_id in files.custom_ids():
            obj = found.get(custom_id)
            if obj is None:
                results[custom_id] = ItemFailure("errored", f"no line for it in run_batch's output {files.output}")
            else:
                results[custom_id] = read_output_line(vllm_line_as_openai(obj))[1]
        return results

    async def cancel(self, batch_id: str) -> None:
        """Stop the batch's job, queued or running; its status is failed (`canceled`) from then on."""
        files = self.files(batch_id)
        if files.input.exists():
            files.canceled.touch()
        job = self.jobs.pop(batch_id, None)
        if job is not None:
            await asyncio.to_thread(job.stop, self.stop_grace)

    async def close(self) -> None:
        """Stop every job this instance started that is still queued or running (a rerun starts it again)."""
        jobs, self.jobs = list(self.jobs.values()), {}
        for job in jobs:
            await asyncio.to_thread(job.stop, self.stop_grace)

    # -- the job ---------------------------------------------------------------------------------------

    def _command(self, files: BatchFiles) -> list[str]:
        run_batch = [str(self.python), "-m", RUN_BATCH, "-i", str(files.input), "-o", str(files.output)]
        run_batch += ["--model", self.model, *self.args]
        queue = [str(self.python), "-c", QUEUE_THEN_RUN, str(files.lock), str(self.machine_lock), str(files.exit)]
        return [*queue, *run_batch]

    def _environment(self) -> dict[str, str]:
        """bft's environment, without telemetry; offline for a model folder (as `vllm_server.py` runs vLLM),
        so that a missing folder is not looked up on the Hub as a model id; then the caller's `env`."""
        env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if self.model.startswith(("/", ".", "~")) or Path(self.model).exists():
            env["HF_HUB_OFFLINE"] = "1"
        return env | self.env


def check_lines(lines: list[bytes], label: str) -> None:
    """Refuse what would fail the whole job: a line that is not a chat request, or a custom_id twice (the
    output could not say which reply is whose)."""
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError as error:
            raise ValueError(f"batch {label!r}, line {number}: not JSON ({error})") from None
        if not isinstance(obj, dict) or obj.get("url") != CHAT_URL:
            raise ValueError(f"batch {label!r}, line {number}: vLLM's run_batch serves {CHAT_URL} requests only")
        custom_id = obj.get("custom_id")
        if custom_id in seen:
            raise ValueError(f"batch {label!r}, line {number}: custom_id {custom_id!r} twice")
        seen.add(custom_id)


def pending_status(files: BatchFiles) -> BatchStatus:
    """A live job's status: queued behind another job, loading its model, or its progress line's counts."""
    tail = files.log_tail(200)
    if STARTED not in tail and QUEUED in tail:
        return BatchStatus(files.batch_id, "pending", detail="queued behind another run_batch on this machine")
    progress = PROGRESS_RE.findall(tail)
    if not progress:
        return BatchStatus(files.batch_id, "pending", detail="running: loading the model")
    completed, total = (int(n) for n in progress[-1])
    counts = {"completed": completed, "total": total}
    return BatchStatus(files.batch_id, "pending", counts, f"running: {completed}/{total} requests done")


def ended_status(files: BatchFiles) -> BatchStatus:
    """An ended job's status, from its files alone (so that a rerun reads it as the bft that started it)."""
    code, complete = files.exit_code(), files.complete()
    if complete and code in (0, None):  # None: the process was killed after it wrote its output
        return BatchStatus(files.batch_id, "ended", {"total": len(files.custom_ids())}, "completed")
    if code is None:
        reason = "the run_batch process is gone without its output (killed, or the bft that started it stopped)"
    elif code == 0:
        reason = f"run_batch exited 0 without a complete output file {files.output}"
    else:
        reason = f"run_batch exited with code {code}"
    tail = files.log_tail()
    return BatchStatus(
        files.batch_id, "failed", detail=f"{reason}; the end of {files.log}:\n{tail}" if tail else reason
    )
