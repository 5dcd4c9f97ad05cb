"""Anthropic's Message Batches API: a stage's chat requests sent as one batch, read back as live replies.

Sources (Anthropic's published documentation, read December 2026):

- API reference, "Create a Message Batch" (https://platform.claude.com/docs/en/api/messages/batches/create):
  `POST /v1/messages/batches` with `{"requests": [{"custom_id", "params"}]}`, at most 100,000 requests,
  `custom_id` matching `^[a-zA-Z0-9_-]{1,64}$` and unique within the batch; `params` are a Messages request
  (`model`, `max_tokens`, `messages`, `temperature`, `top_p`, `stop_sequences`);
- "Retrieve a Message Batch" (`GET /v1/messages/batches/{id}`): `processing_status` in_progress | canceling |
  ended, `request_counts` {processing, succeeded, errored, canceled, expired}, `results_url`, `expires_at`
  (24 hours after creation), `archived_at` (results no longer available);
- "Retrieve Message Batch results": the `results_url` streams JSONL, a line per request, in any order:
  `{"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored", "error": ErrorResponse}
  | {"type": "canceled"} | {"type": "expired"}}`; "Cancel a Message Batch" (`POST .../{id}/cancel`);
- "Errors" (https://docs.claude.com/en/api/errors): the body `{"type": "error", "error": {"type",
  "message"}}`; 400 invalid_request_error, 401 authentication_error, 403 permission_error, 404
  not_found_error, 413 request_too_large (a Batch API request over 256 MB, refused before it reaches the API),
  429 rate_limit_error, 500 api_error, 529 overloaded_error. Every request sends `x-api-key` and
  `anthropic-version: 2023-06-01`;
- the migration guide to Claude 4.5 models (https://platform.claude.com/docs/en/about-claude/models/
  migrating-to-claude-4): current models take `temperature` or `top_p`, not both (a 400 otherwise).

What Anthropic cannot do is refused before any request (`unsupported`): raw prompts (the Messages API has no
raw-completion route), token probabilities (it returns none), a temperature over 1 (its range is 0-1), and a
temperature other than 1 together with a top_p under 1 (current models refuse both; 1 is Anthropic's default
temperature, so the papers' `temperature: 1.0, top_p: 0.9` is sent as `top_p: 0.9` alone and means the same).
`seed` is not a Messages parameter: it is left out, as the config's help says a seed is sent only to servers
that honour one.

The provider takes one JSON body, not a file: `line` writes a request as a line of JSON so that the run can
measure and split batches like OpenAI's files (`base.split_lines`), and `submit` joins the lines into the
`requests` array. The configured byte limit is the body's; `limits.max_bytes` keeps room for the array's
envelope. The Message Batches API keeps no metadata, so `submit`'s label is not sent.

Never paying twice for one batch. A create whose answer was lost (a connection reset after Anthropic acted, a
read timeout) leaves bft unsure whether the batch exists, and the run's retry would make a second one. The API
takes no idempotency key, keeps no metadata and shows no request of a batch before it ends; what it shows is
"List Message Batches" (`GET /v1/messages/batches`: every batch of the workspace, most recently created first,
`limit` 1-1000, `after_id` the cursor, `has_more`, `last_id`), each batch with its `created_at` and
`request_counts`. So the retry of a create that raised a `RetryableError` first lists the batches created
since that first try began (less `CLOCK_MARGIN` for this machine's clock against Anthropic's) whose
`request_counts` add up to the number of requests sent, leaving out every batch this client has already
returned. One such batch is adopted; none, and the batch is created; more than one, and `submit` stops with an
`EndpointError` naming them rather than guess. Creates are made one at a time, so that no batch of this
client is in flight, created but not yet returned, while another's retry looks.

Its limits: someone else in the workspace who creates a batch of as many requests in that window, while
bft's request never arrived, has that batch adopted. Nothing is paid twice then, but bft's requests are not
sent: that batch's results lack them, so they come back failed (`errored`) and the run sends them again, a
batch's wait later. A clock more than `CLOCK_MARGIN` ahead of Anthropic's misses the batch and creates a
second one, as does a create still being processed when the list is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.batches.base import BatchItem, BatchLimits, BatchStatus, ItemFailure
from bft.generation.endpoints.failures import retry_after, status_error
from bft.generation.endpoints.protocols import ServedReply
from bft.generation.endpoints.transport import redact_url
from bft.generation.errors import ConfigError, EndpointError, EndpointFailure, RetryableError

ANTHROPIC_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
BATCHES = "/v1/messages/batches"
MAX_REQUESTS = 100_000  # requests in one batch
MAX_BODY_BYTES = 256_000_000  # one batch's request body (256 MB, read as the smaller, decimal megabytes)
ENVELOPE = b'{"requests":[]}'  # what the body adds to its lines (a comma replaces each line's newline)
CLOCK_MARGIN = 60.0  # seconds this machine's clock may be ahead of Anthropic's when looking for a lost batch
LIST_PAGE = 1000  # batches a page of the list (the most Anthropic gives)
# Anthropic's stop reasons in bft's words; others (refusal, tool_use, pause_turn, ...) are kept as given
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
# The HTTP status each documented error type comes with, for an errored item (results give the type only)
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def unsupported(mode: str, top_n: int | None, sampling: SamplingConfig) -> str | None:
    """Why Anthropic's Message Batches cannot send a stage's requests as asked, or None when they can."""
    if mode == "raw":
        return "Anthropic's Messages API has no raw-completion route: use mode: chat for a stage sent to it"
    if top_n:
        return "Anthropic's Messages API returns no token probabilities (top_n): score such a stage elsewhere"
    if sampling.temperature > 1:
        return f"Anthropic's temperature ranges from 0 to 1, not {sampling.temperature}"
    if sampling.top_p < 1 and sampling.temperature != 1:
        return (
            f"current Claude models take temperature or top_p, not both (temperature {sampling.temperature}, "
            f"top_p {sampling.top_p}): set top_p: 1.0 to sample by temperature, or temperature: 1.0 for top_p"
        )
    return None


def request_params(item: BatchItem) -> dict[str, Any]:
    """The Messages request of `item`: its text as the user turn, and the sampling Anthropic takes."""
    why = unsupported(item.mode, item.top_n, item.sampling)
    if why:
        raise ConfigError(f"batch item {item.custom_id}: {why}")
    if not item.model:
        raise ConfigError(f"batch item {item.custom_id}: Anthropic needs the stage's model (set model:)")
    sampling = item.sampling
    params: dict[str, Any] = {
        "model": item.model,
        "max_tokens": sampling.max_tokens,
        "messages": [{"role": "user", "content": item.text}],
    }
    if sampling.top_p < 1:  # temperature is then Anthropic's default, 1 (`unsupported`): never both
        params["top_p"] = sampling.top_p
    else:
        params["temperature"] = sampling.temperature
    if sampling.stop:
        params["stop_sequences"] = list(sampling.stop)
    return params


def read_message(message: dict[str, Any]) -> ServedReply:
    """A Message as bft reads replies: text blocks joined, thinking kept apart, usage in OpenAI's names."""
    try:
        blocks = message["content"]
        text = "".join(block["text"] for block in blocks if block.get("type") == "text")
        thinking = [block["thinking"] for block in blocks if block.get("type") == "thinking"]
        usage = message.get("usage") or {}
        stop_reason = message.get("stop_reason")
        return ServedReply(
            text,
            FINISH.get(stop_reason, stop_reason),
            {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens")},
            message.get("model"),
            reasoning="".join(thinking) if thinking else None,
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise RetryableError("malformed_response", f"an Anthropic message without {error!r}") from None


def item_result(result: dict[str, Any]) -> ServedReply | ItemFailure:
    """One result line's `result`: the reply, or why there is none. An invalid request (a prompt too long, a
    parameter the model refuses) is refused for good; every other error may pass when sent again."""
    kind = result.get("type")
    if kind == "succeeded":
        return read_message(result.get("message"))
    if kind == "canceled":
        return ItemFailure("canceled", "the batch was canceled before this request was processed")
    if kind == "expired":
        return ItemFailure("expired", "the batch reached its 24 hours before this request was processed")
    if kind == "errored":
        error_type, message = error_of(result.get("error"))
        failure = "refused" if error_type == "invalid_request_error" else "errored"
        return ItemFailure(failure, f"{error_type}: {message}", ERROR_STATUS.get(error_type))
    return ItemFailure("errored", f"an unknown result type {kind!r}")


def error_of(body: Any) -> tuple[str, str]:
    """The type and message of an Anthropic ErrorResponse `{"type": "error", "error": {"type", "message"}}`."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return "unknown", body.strip()[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "unknown", str(body)[:300]
    return str(error.get("type") or "unknown"), str(error.get("message") or "")[:600]


def _moment(stamp: Any) -> float | None:
    """An RFC 3339 time of the API (`2024-08-20T18:37:24.100435Z`) in seconds since the epoch, or None."""
    try:
        moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        return None
    return moment.timestamp() if moment is not None and moment.tzinfo is not None else None


def readable(batch_id: str, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch object, unless its results were archived (`archived_at`): they can no longer be read, and its
    requests were paid for, so the run stops (an `EndpointError`) rather than send them again unasked."""
    if batch.get("archived_at"):
        raise EndpointError(
            f"Anthropic batch {batch_id} ended and its results were archived at {batch['archived_at']}: they can "
            "no longer be read (sending its requests again would pay for them twice)"
        )
    return batch


class AnthropicBatches:
    """Anthropic's Message Batches behind bft's `BatchApi` (`base.py`); one HTTP session, closed by `close`."""

    name = "anthropic"

    def __init__(
        self,
        api_key: str,
        url: str = ANTHROPIC_URL,
        *,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        key_env: str | None = None,
        timeout: float = 300.0,
        list_page: int = LIST_PAGE,
    ):
        """`max_requests` and `max_bytes` (of a batch's body) lower the documented limits, never raise them;
        `key_env` names the variable the key came from, for the message a refused key gives; `list_page` is
        the batches a page when looking for one whose creation went unanswered (1-1000)."""
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self.key_env = key_env
        if not api_key:
            raise ConfigError(f"Anthropic batches at {self.shown} need an API key (set {key_env or 'its variable'})")
        self._key = api_key
        requests = max_requests or MAX_REQUESTS
        body = max_bytes or MAX_BODY_BYTES
        if not 0 < requests <= MAX_REQUESTS or not len(ENVELOPE) < body <= MAX_BODY_BYTES:
            raise ConfigError(
                f"Anthropic batches hold 1 to {MAX_REQUESTS:,} requests and at most {MAX_BODY_BYTES:,} bytes, "
                f"not max_requests {max_requests} / max_bytes {max_bytes}"
            )
        self.limits = BatchLimits(max_requests=requests, max_bytes=body - len(ENVELOPE))
        self.timeout = timeout
        self.list_page = list_page
        self._http: aiohttp.ClientSession | None = None
        self._creating = asyncio.Lock()  # one create at a time (see the module's docstring)
        self._unanswered: dict[str, float] = {}  # a body's digest -> when its first unanswered create began
        self._returned: set[str] = set()  # every batch id `submit` returned: never adopted again

    def __repr__(self) -> str:  # never shows the key
        return f"AnthropicBatches({self.shown!r})"

    def line(self, item: BatchItem) -> bytes:
        request = {"custom_id": item.custom_id, "params": request_params(item)}
        return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    async def submit(self, lines: list[bytes], label: str) -> str:
        """Create a batch of `lines`; its id. A retry after a create that went unanswered adopts the batch that
        create made, when exactly one batch can be it (the module's docstring says how it is found)."""
        body = ENVELOPE[:-2] + b",".join(line.rstrip(b"\n") for line in lines) + ENVELOPE[-2:]
        digest = hashlib.sha256(body).hexdigest()
        async with self._creating:
            since = self._unanswered.get(digest)
            batch_id = await self._created_since(since, len(lines)) if since is not None else None
            if batch_id is None:
                started = time.time()
                try:
                    batch = await self._json("POST", BATCHES, body)
                except RetryableError:
                    self._unanswered.setdefault(digest, started)  # Anthropic may have made it all the same
                    raise
                if not isinstance(batch.get("id"), str):
                    self._unanswered.setdefault(digest, started)
                    raise RetryableError("malformed_response", f"{self.shown}{BATCHES} answered a batch without an id")
                batch_id = batch["id"]
            self._unanswered.pop(digest, None)
            self._returned.add(batch_id)
            return batch_id

    async def _created_since(self, since: float, requests: int) -> str | None:
        """The one batch of `requests` requests created since `since` (less the clock margin) that this client
        has not returned; None when there is none, an `EndpointError` naming them when there are several."""
        oldest = since - CLOCK_MARGIN
        candidates: list[str] = []
        after: str | None = None
        while True:
            query = {"limit": self.list_page} | ({"after_id": after} if after else {})
            page = await self._json("GET", f"{BATCHES}?{urlencode(query)}")
            batches = [batch for batch in page.get("data") or [] if isinstance(batch, dict)]
            for batch in batches:
                created, counts = _moment(batch.get("created_at")), batch.get("request_counts")
                if created is None or created < oldest or batch.get("id") in self._returned:
                    continue
                if isinstance(counts, dict) and sum(n for n in counts.values() if isinstance(n, int)) == requests:
                    candidates.append(str(batch.get("id")))
            moments = [_moment(batch.get("created_at")) for batch in batches]
            older = any(moment is not None and moment < oldest for moment in moments)
            if older or not batches or not page.get("has_more"):
                break
            after = str(page.get("last_id") or batches[-1].get("id"))
        if len(candidates) > 1:
            raise EndpointError(
                f"the answer to creating a batch of {requests} requests at {self.shown} was lost, and "
                f"{len(candidates)} batches of {requests} requests were created since "
                f"{datetime.fromtimestamp(oldest, UTC).isoformat(timespec='seconds')}: {', '.join(candidates)}. "
                f"bft cannot tell which one is its own: cancel those not needed in Anthropic's Console "
                f"(POST /v1/messages/batches/<id>/cancel), then rerun to send these requests again"
            )
        return candidates[0] if candidates else None

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._json("GET", f"{BATCHES}/{batch_id}", batch_id=batch_id)
        return self._status(batch_id, readable(batch_id, batch))

    async def results(self, batch_id: str) -> dict[str, ServedReply | ItemFailure]:
        batch = readable(batch_id, await self._json("GET", f"{BATCHES}/{batch_id}", batch_id=batch_id))
        url = batch.get("results_url")
        if not url:
            detail = self._status(batch_id, batch).detail
            raise RetryableError("batch_pending", f"Anthropic batch {batch_id} has no results yet ({detail})")
        if urlsplit(url)[:2] != urlsplit(self.url)[:2]:  # the key goes to the API's own host only
            raise EndpointError(f"Anthropic batch {batch_id} gives its results at another host: {redact_url(url)}")
        raw = await self._send("GET", url, None, batch_id)
        replies: dict[str, ServedReply | ItemFailure] = {}
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                replies[entry["custom_id"]] = item_result(entry["result"])
            except (ValueError, KeyError, TypeError) as error:
                raise RetryableError(
                    "malformed_response", f"line {number} of Anthropic batch {batch_id}'s results: {error!r}"
                ) from None
        return replies

    async def cancel(self, batch_id: str) -> None:
        await self._json("POST", f"{BATCHES}/{batch_id}/cancel", b"", batch_id)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- HTTP ------------------------------------------------------------------------------------------

    def _status(self, batch_id: str, batch: dict[str, Any]) -> BatchStatus:
        """A batch object as bft's status: ended (results readable) or pending."""
        processing = batch.get("processing_status")
        counts = batch.get("request_counts") if isinstance(batch.get("request_counts"), dict) else {}
        state = "ended" if processing == "ended" else "pending"
        detail = f"{processing}; expires at {batch.get('expires_at')}" if state == "pending" else str(processing)
        return BatchStatus(batch_id, state, counts, detail)

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            # no deadline on a whole answer (a results file may be large): on a connection and its silences
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
            headers = {"x-api-key": self._key, "anthropic-version": API_VERSION}
            self._http = aiohttp.ClientSession(timeout=timeout, headers=headers)
        return self._http

    async def _json(self, method: str, route: str, body: bytes | None = None, batch_id: str | None = None) -> dict:
        """`route`'s JSON object, or bft's error kind."""
        raw = await self._send(method, self.url + route, body, batch_id)
        try:
            answer = json.loads(raw)
        except ValueError as error:
            raise RetryableError("malformed_response", f"{self.shown}{route}: {error!r}") from None
        if not isinstance(answer, dict):
            raise RetryableError("malformed_response", f"{self.shown}{route}: a JSON {type(answer).__name__}")
        return answer

    async def _send(self, method: str, url: str, body: bytes | None, batch_id: str | None) -> bytes:
        session = await self._session()
        headers = {"content-type": "application/json"} if body is not None else {}
        try:
            async with session.request(method, url, data=body, headers=headers) as response:
                raw = await response.read()
                if response.status != 200:
                    text = raw.decode("utf-8", "replace")
                    raise self._failure(response.status, text, redact_url(url), response.headers, batch_id)
                return raw
        except TimeoutError as error:
            raise RetryableError("timeout", f"{redact_url(url)}: {error!r}") from None
        except aiohttp.ClientError as error:  # refused, reset, closed mid-answer
            raise RetryableError("connection", f"{redact_url(url)}: {error or type(error).__name__}") from None

    def _failure(self, status: int, body: str, url: str, headers: Any, batch_id: str | None) -> EndpointFailure:
        """Anthropic's error answers in bft's kinds (`failures.py` for what they share with the others)."""
        kind, message = error_of(body)
        said = f"{kind}: {message}"
        if status in (401, 403):
            key = f"the key in {self.key_env}" if self.key_env else "the API key"
            return EndpointError(f"{url} refused {key} (HTTP {status}, {said})")
        if status == 404 and batch_id is not None:
            return EndpointError(f"Anthropic knows no batch {batch_id} at {self.shown} (HTTP 404, {said})")
        if status == 529:
            return RetryableError("overloaded", f"{url}: {said}", retry_after(headers))
        return status_error(status, json.dumps({"error": {"message": said}}), url, headers)
