"""OpenAI's Batch API: a stage's requests uploaded as a JSONL file, run within a day at half price.

The protocol, as OpenAI's API reference and its OpenAPI document (github.com/openai/openai-openapi,
`openapi.yaml`) describe it:

- the request file: one `BatchRequestInput` a line, `{"custom_id", "method": "POST", "url", "body"}`, where
  `body` is what the live route takes (`/v1/chat/completions` or `/v1/completions` here). All lines of one
  batch share the batch's `endpoint`; a file holds up to 50,000 requests and 200 MB (`CreateBatchRequest`);
- `POST /v1/files` (multipart: `file`, `purpose=batch`) uploads it and answers an `OpenAIFile`;
  `POST /v1/batches` (`input_file_id`, `endpoint`, `completion_window`, `metadata`) answers a `Batch`;
- `GET /v1/batches/{id}`: the `Batch` with its `status` (validating, in_progress, finalizing, completed,
  expired, cancelling, cancelled, failed), `request_counts {total, completed, failed}`, `output_file_id`,
  `error_file_id` and, for a batch that failed validation, `errors.data` (`BatchError`: code, message,
  param, line); `POST /v1/batches/{id}/cancel`;
- `GET /v1/files/{id}/content`: a file's bytes. The output and error files hold one `BatchRequestOutput` a
  line, `{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null, "error": {"code",
  "message"} | null}`. A request the API refused (a prompt over the context) sits in the error file with its
  HTTP status and OpenAI's error body in `response` (as openai/openai-openapi issue #302 shows); a request a
  batch did not reach before it expired, with `error.code` `batch_expired` (OpenAI's Batch guide).

Never paying twice for one batch. A create whose answer was lost (a connection reset after OpenAI acted, a
read timeout) leaves bft unsure whether the batch exists, and the run's retry would make a second one. So
`submit` uploads a content once per client (the file id is kept, by the lines' digest, until a batch of it is
known), and after a create that raised a `RetryableError` it first looks for a batch already made from that
file: `GET /v1/batches` (ListBatchesResponse: `data`, `has_more`, `last_id`; `limit` 1-100, `after` a batch
id as the cursor; newest first) is paged back to the file's own `created_at` (no batch from the file is
older), and a batch with the file's `input_file_id` and this submit's `metadata.bft_label` is adopted, never
created again. The file id is bft's alone, so the match is exact. What it cannot see: a create still being
processed when the list is read (a retry seconds later, against a slow API), which then makes two batches
from the file; were several found, the oldest (the first create's) is taken.

Which requests go in which batch, polling, the ledger of pending batches and retries are the run's
(`run/batching.py`). vLLM's offline `run_batch` reads and writes the same file format: `vllm_offline.py`
uses `request_line` and `read_output_line` from here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from bft.generation.endpoints import protocols
from bft.generation.endpoints.batches.base import (
    BatchItem,
    BatchLimits,
    BatchState,
    BatchStatus,
    FailureKind,
    ItemFailure,
    check_within,
)
from bft.generation.endpoints.failures import error_message, status_error
from bft.generation.endpoints.protocols import ServedReply
from bft.generation.endpoints.transport import base_url, redact_url
from bft.generation.errors import EndpointError, RequestRejected, RetryableError
from bft.generation.reasons import INPUT_INVALID

OPENAI_URL = "https://api.openai.com"
# `CreateBatchRequest.input_file_id`: "The file can contain up to 50,000 requests, and can be up to 200 MB"
LIMITS = BatchLimits(max_requests=50_000, max_bytes=200_000_000)
CHAT_URL, COMPLETIONS_URL = "/v1/chat/completions", "/v1/completions"
PENDING = {"validating", "in_progress", "finalizing", "cancelling"}
ENDED = {"completed", "expired", "cancelled"}
# An item that failed for a reason another attempt may not meet: rate limits, timeouts, the server's errors.
RETRYABLE_STATUS = {408, 409, 429}
# What an item absent from both result files means, by the batch's status.
MISSING: dict[str, FailureKind] = {"expired": "expired", "cancelled": "canceled", "completed": "errored"}
# `error.code` of lines the batch itself failed (OpenAI's Batch guide: expired requests; a cancelled batch).
ERROR_CODES: dict[str, FailureKind] = {"batch_expired": "expired", "batch_cancelled": "canceled"}


def request_line(item: BatchItem) -> bytes:
    """`item` as one line of a request file, newline included: chat items to `/v1/chat/completions`, raw
    ones to `/v1/completions`, with the live request's body (not streamed). A `model` of None is left out
    (vLLM's `run_batch` serves its one model; OpenAI needs one, which `OpenAIBatches.line` checks)."""
    model = item.model or ""
    # at most 4 stop sequences: OpenAI's `stop` ("Up to 4 sequences") and vLLM's VLLM_MAX_STOP_STRINGS; the
    # stage cuts each reply at any of the others (`method/stages.honour_stops`)
    sampling = replace(item.sampling, stop=item.sampling.stop[: protocols.VLLM_MAX_STOP_STRINGS])
    if item.mode == "chat":
        url = CHAT_URL
        body = protocols.chat_request(item.text, None, model, sampling, item.top_n, tgi=False, stream=False)
    else:
        url = COMPLETIONS_URL
        body = protocols.completion_request(item.text, model, sampling, item.top_n, stream=False)
    if item.model is None:
        del body["model"]
    line = {"custom_id": item.custom_id, "method": "POST", "url": url, "body": body}
    # compact and UTF-8 (the byte limit counts every byte); a newline inside a text is escaped by JSON
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def read_output_line(obj: dict[str, Any]) -> tuple[str, ServedReply | ItemFailure]:
    """One line of an output or error file: its custom_id and the reply, or why there is none.

    A 200 is read as the live reply would be (chat or completion, told by the body's `object` or by its
    choice having a `message`); a 4xx other than 408/409/429 is the request refused (`refused`, not sent
    again); 429, 5xx and an `error` without a response are `errored`, `batch_expired` is `expired`."""
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str):
        raise RetryableError("malformed_response", f"a batch result line without a custom_id: {str(obj)[:200]}")
    response, error = obj.get("response"), obj.get("error")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        status, body = response["status_code"], response.get("body")
        if status == 200 and isinstance(body, dict):
            return custom_id, _read_body(body)
        message = _error_text(body) if isinstance(body, dict) else str(body)[:300]
        retryable = status in RETRYABLE_STATUS or status >= 500
        return custom_id, ItemFailure("errored" if retryable else "refused", f"HTTP {status}: {message}", status)
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        detail = f"{code}: {error.get('message') or 'no message'}" if code else str(error.get("message"))
        return custom_id, ItemFailure(ERROR_CODES.get(code, "errored"), detail)
    return custom_id, ItemFailure("errored", "the result line has neither a response nor an error")


def _read_body(body: dict[str, Any]) -> ServedReply | ItemFailure:
    """A 200 body as a reply: `chat.completion` or `text_completion`; one not in its shape is `errored`."""
    choices = body.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    chat = body.get("object") == "chat.completion" or "message" in first
    # the line does not say whether alternatives were asked for: read them wherever the body has them
    top_n = 1 if first.get("logprobs") else None
    try:
        return protocols.read_chat(body, top_n) if chat else protocols.read_completion(body, top_n)
    except RetryableError as error:
        return ItemFailure("errored", f"a reply body not in its protocol's shape: {error.detail}", 200)


def _error_text(body: dict[str, Any]) -> str:
    """`code: message` of OpenAI's error body `{"error": {"message", "type", "param", "code"}}`."""
    message, _ = error_message(json.dumps(body))
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return f"{code}: {message}" if isinstance(code, str) and code else message  # vLLM's code is the status


def _url_of(line: bytes) -> str:
    """The `url` a request line sends to (the batch's endpoint)."""
    try:
        url = json.loads(line).get("url")
    except (ValueError, AttributeError):
        url = None
    if not isinstance(url, str):
        raise ValueError(f"not a batch request line (no url): {line[:200]!r}")
    return url


@dataclass
class _Upload:
    """A request file uploaded for a batch not yet known to exist: its id, when OpenAI stored it (OpenAI's
    clock), and whether a create from it went unanswered (the batch may exist all the same)."""

    file_id: str
    created_at: int
    unanswered: bool = False


class OpenAIBatches:
    """OpenAI's `/v1/files` + `/v1/batches`, at `url` (the providers that copy the format take their own)."""

    name = "openai"

    def __init__(
        self,
        url: str = OPENAI_URL,
        token: str | None = None,
        completion_window: str = "24h",
        max_requests: int | None = None,
        max_bytes: int | None = None,
        token_env: str | None = None,  # where the key came from, named when the provider refuses it
        timeout: float = 300.0,  # seconds a connection or a read may stay silent
        list_page: int = 100,  # batches a page when looking for one whose creation went unanswered (1-100)
    ):
        self.url = base_url(url)
        self.where = redact_url(self.url)
        self.token = token
        self.token_env = token_env
        self.completion_window = completion_window
        self.limits = BatchLimits(max_requests or LIMITS.max_requests, max_bytes or LIMITS.max_bytes)
        self.timeout = timeout
        self.list_page = list_page
        self._uploads: dict[str, _Upload] = {}  # by the digest of a file's bytes, until its batch is known
        self._http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBatches({self.where!r})"

    def line(self, item: BatchItem) -> bytes:
        if not item.model:
            raise ValueError(f"batch item {item.custom_id}: OpenAI's batch requests name a model (the stage's model)")
        return request_line(item)

    # -- the protocol ----------------------------------------------------------------------------------

    async def submit(self, lines: list[bytes], label: str) -> str:
        """Upload `lines` as a request file and create a batch of it; its id. A retry after a create that went
        unanswered uploads nothing again and adopts the batch that create made, if OpenAI has it."""
        check_within(lines, self.limits, label)
        endpoint = _url_of(lines[0])
        for line in lines[1:]:
            if _url_of(line) != endpoint:  # OpenAI: every request of a batch goes to the batch's endpoint
                raise ValueError(
                    f"batch {label!r} mixes {endpoint} and {_url_of(line)} requests; OpenAI runs one endpoint "
                    f"a batch: send chat and raw requests in separate batches"
                )
        content = b"".join(lines)
        digest = hashlib.sha256(content).hexdigest()
        upload = self._uploads.get(digest)
        if upload is None:
            upload = self._uploads[digest] = await self._upload(content, label, len(lines))
        batch_id = await self._created_from(upload, label) if upload.unanswered else None
        if batch_id is None:
            request = {
                "input_file_id": upload.file_id,
                "endpoint": endpoint,
                "completion_window": self.completion_window,
                "metadata": {"bft_label": label[:512]},  # metadata values hold up to 512 characters
            }
            try:
                batch_id = str((await self._json("POST", "/v1/batches", f"batch {label!r}", json=request))["id"])
            except RetryableError:
                upload.unanswered = True  # OpenAI may have made it all the same: the next try looks first
                raise
        self._uploads.pop(digest, None)
        return batch_id

    async def _upload(self, content: bytes, label: str, requests: int) -> _Upload:
        """`content` stored as a batch request file."""
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename=f"{label}.jsonl", content_type="application/jsonl")
        what = f"the request file of batch {label!r} ({requests} requests, {len(content)} bytes)"
        uploaded = await self._json("POST", "/v1/files", what, data=form)
        created_at = uploaded.get("created_at")
        return _Upload(str(uploaded["id"]), created_at if isinstance(created_at, int) else 0)

    async def _created_from(self, upload: _Upload, label: str) -> str | None:
        """The batch an unanswered create made from `upload`, if OpenAI has it: the list of batches, newest
        first, read back to the file's upload (no batch of it is older). The oldest match is the first create's."""
        found: list[str] = []
        after: str | None = None
        while True:
            query = {"limit": str(self.list_page)} | ({"after": after} if after else {})
            page = await self._object("GET", "/v1/batches", "the list of batches", params=query)
            batches = [batch for batch in page.get("data") or [] if isinstance(batch, dict)]
            found += [
                str(batch["id"])
                for batch in batches
                if batch.get("input_file_id") == upload.file_id
                and (batch.get("metadata") or {}).get("bft_label") == label[:512]
            ]
            older = any(isinstance(b.get("created_at"), int) and b["created_at"] < upload.created_at for b in batches)
            if older or not batches or not page.get("has_more"):
                return found[-1] if found else None
            after = str(page.get("last_id") or batches[-1]["id"])

    async def status(self, batch_id: str) -> BatchStatus:
        return _status(await self._batch(batch_id))

    async def results(self, batch_id: str) -> dict[str, ServedReply | ItemFailure]:
        """Every item of an ended batch: the output and error files read, and the items in neither (those an
        expired or cancelled batch never ran) named from its input file."""
        batch = await self._batch(batch_id)
        status = batch.get("status")
        if status not in ENDED:
            raise ValueError(f"batch {batch_id} is {status}, not ended: its results cannot be read yet")
        found: dict[str, ServedReply | ItemFailure] = {}
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                for obj in await self._jsonl(batch[key], f"the {key[:-3]} of batch {batch_id}"):
                    custom_id, result = read_output_line(obj)
                    found[custom_id] = result
        total = (batch.get("request_counts") or {}).get("total")
        if status != "completed" or not isinstance(total, int) or len(found) < total:
            detail = (
                "in neither result file of the completed batch"
                if status == "completed"
                else f"no result line: the batch {status} before it ran this request"
            )
            for obj in await self._jsonl(batch["input_file_id"], f"the request file of batch {batch_id}"):
                if isinstance(obj.get("custom_id"), str) and obj["custom_id"] not in found:
                    found[obj["custom_id"]] = ItemFailure(MISSING[status], detail)
        return found

    async def cancel(self, batch_id: str) -> None:
        await self._json("POST", f"/v1/batches/{batch_id}/cancel", f"batch {batch_id!r}")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- HTTP ------------------------------------------------------------------------------------------

    async def _batch(self, batch_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/batches/{batch_id}", f"batch {batch_id!r}")

    async def _jsonl(self, file_id: str, what: str) -> list[dict[str, Any]]:
        """The JSON objects of a JSONL file's lines (split on newlines only: texts may hold U+2028)."""
        raw = await self._request("GET", f"/v1/files/{file_id}/content", f"{what} ({file_id})")
        objects = []
        for number, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as error:
                raise RetryableError("malformed_response", f"{what} ({file_id}), line {number}: {error}") from None
            if isinstance(obj, dict):
                objects.append(obj)
        return objects

    async def _json(self, method: str, route: str, what: str, **send: Any) -> dict[str, Any]:
        """The object with an id (a file, a batch) that `method route` answers."""
        body = await self._object(method, route, what, **send)
        if "id" not in body:
            raise RetryableError("malformed_response", f"{self.where}{route}: no object with an id: {str(body)[:200]}")
        return body

    async def _object(self, method: str, route: str, what: str, **send: Any) -> dict[str, Any]:
        """The JSON object that `method route` answers."""
        raw = await self._request(method, route, what, **send)
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise RetryableError("malformed_response", f"{self.where}{route}: {error}") from None
        if not isinstance(body, dict):
            raise RetryableError("malformed_response", f"{self.where}{route}: not a JSON object: {raw[:200]!r}")
        return body

    async def _request(self, method: str, route: str, what: str, **send: Any) -> bytes:
        """The body of a 200 answer to `method route`, or bft's error kind naming `what` was asked for."""
        where = self.where + route
        try:
            async with self._session().request(method, self.url + route, **send) as response:
                raw = await response.read()
                if response.status == 200:
                    return raw
                raise self._failure(response.status, raw.decode("utf-8", "replace"), where, what, response.headers)
        except TimeoutError as error:
            raise RetryableError("timeout", f"{where}: {error or 'no answer'}") from None
        except aiohttp.ClientError as error:  # refused, reset, closed mid-answer
            raise RetryableError("connection", f"{where}: {error or type(error).__name__}") from None

    def _failure(self, status: int, body: str, where: str, what: str, headers: Any) -> Exception:
        """bft's error for a refused call: the key, an unknown object, a refused file, or one to retry."""
        message, _ = error_message(body)
        if status in (401, 403):
            key = f" (the key in ${self.token_env})" if self.token_env else ""
            return EndpointError(f"{where} refused the API key{key}: HTTP {status}: {message}")
        if status == 404:
            return EndpointError(f"{where}: no {what} there (HTTP 404: {message})")
        if status in (400, 413, 422):
            return RequestRejected(INPUT_INVALID, f"{where} refused {what}: HTTP {status}: {message}")
        return status_error(status, body, where, headers)  # 429, 5xx: retried, after `Retry-After`

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            # no deadline on a whole answer (a result file may be large), only on silence
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
            self._http = aiohttp.ClientSession(headers=headers, timeout=timeout)
        return self._http


def _status(batch: dict[str, Any]) -> BatchStatus:
    """A `Batch` object as bft's status: pending, ended (results to read) or failed (send every item again)."""
    status = str(batch.get("status"))
    state: BatchState
    if status in PENDING:
        state = "pending"
    elif status in ENDED:
        state = "ended"
    elif status == "failed":
        state = "failed"
    else:
        raise RetryableError("malformed_response", f"batch {batch.get('id')}: unknown status {status!r}")
    counts = {k: v for k, v in (batch.get("request_counts") or {}).items() if isinstance(v, int)}
    errors = (batch.get("errors") or {}).get("data") or []
    said = [
        f"{e.get('code')}: {e.get('message')}" + (f" (line {e['line']})" if e.get("line") is not None else "")
        for e in errors
        if isinstance(e, dict)
    ]
    detail = status + (": " + "; ".join(said) if said else "")
    return BatchStatus(str(batch.get("id")), state, counts, detail)
