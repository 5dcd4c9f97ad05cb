"""A test server for Anthropic's Message Batches API, its batches answered by a scripted model.

It follows Anthropic's published API reference (the sources are cited in
`generation/endpoints/batches/anthropic.py`): `POST /v1/messages/batches` (create), `GET /v1/messages/batches`
(list, newest first, `limit` and `after_id`), `GET /v1/messages/batches/{id}` (retrieve),
`POST /v1/messages/batches/{id}/cancel` and `GET /v1/messages/batches/{id}/results` (JSONL, once ended).
Every route checks `x-api-key` (401 authentication_error) and `anthropic-version` (400 invalid_request_error);
errors come in Anthropic's body `{"type": "error", "error": {"type", "message"}}`. A body over `max_bytes` is a
413 request_too_large, more than `max_requests` requests or a bad or repeated `custom_id` a 400. The requests'
`params` are checked as the batch is processed (the batch-processing guide, https://docs.claude.com/en/docs/
build-with-claude/batch-processing): a missing field, or `temperature` with `top_p` (refused by current models),
makes that request an errored result with an invalid_request_error.

A batch ends `delay` seconds after it was created (None: only when the test calls `end`); its requests are
then answered by `script` (`models.py`: a `Reply` becomes a Message with a text block, a thinking block for
`Reply.reasoning`, `stop_reason` and `usage`; a `Fault` an errored result). Test hooks: `fail` (custom_id ->
error type and message: that request errors), `refuse` (the next HTTP answers: a 429 with its
`retry-after`, a 529), `drop_creates` (the next creates read and then closed without an answer, as a reset
connection or a proxy's timeout leaves them: `"after_create"` makes the batch first, `"before_create"` does
not), `process` (answer the first requests now), `expire` (end a batch
with its unanswered requests expired), `archive`, `submitted` (how often each custom_id was ever sent in an
accepted batch: nothing may be paid twice) and `batches` (every batch, with its requests).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from tests.servers import protocol
from tests.servers.models import Fault, Reply, Script, SeenRequest, paper_model

API_KEY = "sk-ant-test-key"
VERSION = "2023-06-01"
ROUTE = "/v1/messages/batches"
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
STOP_REASONS = {"eos_token": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens"}
ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def stamp(moment: float | None) -> str | None:
    """An RFC 3339 time, as the batch object writes its times."""
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def error_body(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{uuid.uuid4().hex}"}


class Refused(Exception):
    """An error answer: its status, Anthropic's error type and message, and the seconds of a `retry-after`."""

    def __init__(self, status: int, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.retry_after = status, kind, message, retry_after


@dataclass
class Batch:
    id: str
    requests: list[dict[str, Any]]
    created: float
    results: dict[str, dict] = field(default_factory=dict)  # custom_id -> result, as each is answered
    status: str = "in_progress"
    cancel_initiated: float | None = None
    ended: float | None = None
    archived: float | None = None


class AnthropicBatchServer:
    """Runs in a background thread on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        script: Script = paper_model,
        delay: float | None = 0.0,
        max_requests: int = 100_000,
        max_bytes: int = 256_000_000,
        api_key: str = API_KEY,
    ):
        self.script = script
        self.delay = delay
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.api_key = api_key
        self.batches: dict[str, Batch] = {}
        self.submitted: Counter[str] = Counter()
        self.fail: dict[str, tuple[str, str]] = {}  # custom_id -> (error type, message)
        self.refuse: list[Refused] = []  # the next HTTP answers, whatever the route (429, 500, 529, ...)
        self.drop_creates: list[Literal["after_create", "before_create"]] = []  # the next creates, unanswered
        self.lock = threading.RLock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        # a short poll: `shutdown` waits for it, and every test stops a server
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> AnthropicBatchServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- test hooks -----------------------------------------------------------------------------------

    def process(self, batch_id: str, count: int | None = None) -> None:
        """Answer the batch's first `count` unanswered requests now (all of them when None)."""
        with self.lock:
            batch = self.batches[batch_id]
            waiting = [r for r in batch.requests if r["custom_id"] not in batch.results]
            for request in waiting[:count] if count is not None else waiting:
                batch.results[request["custom_id"]] = self._answer(request)

    def end(self, batch_id: str) -> None:
        """Answer every request of the batch and end it."""
        with self.lock:
            self.process(batch_id)
            self._finish(self.batches[batch_id], "expired")

    def expire(self, batch_id: str) -> None:
        """End the batch as its 24 hours would: the requests not yet answered expire."""
        with self.lock:
            self._finish(self.batches[batch_id], "expired")

    def archive(self, batch_id: str) -> None:
        """Archive an ended batch, as Anthropic does 29 days after creation: its results can no longer be read."""
        with self.lock:
            self.batches[batch_id].archived = time.time()

    # -- batches --------------------------------------------------------------------------------------

    def _finish(self, batch: Batch, unanswered: str) -> None:
        if batch.status == "ended":
            return
        for request in batch.requests:
            batch.results.setdefault(request["custom_id"], {"type": unanswered})
        batch.status, batch.ended = "ended", time.time()

    def _advance(self, batch: Batch) -> None:
        """What time has done to the batch: a cancellation finalised, or the batch processed after `delay`."""
        if batch.status == "canceling":
            self._finish(batch, "canceled")
        elif batch.status == "in_progress" and self.delay is not None and time.time() >= batch.created + self.delay:
            self.process(batch.id)
            self._finish(batch, "expired")

    def _answer(self, request: dict[str, Any]) -> dict:
        """One request answered by the script: a succeeded or an errored result."""
        custom_id, params = request["custom_id"], request["params"]
        if custom_id in self.fail:
            kind, message = self.fail[custom_id]
            return {"type": "errored", "error": error_body(kind, message)}
        invalid = self._invalid(params)
        if invalid:
            return {"type": "errored", "error": error_body("invalid_request_error", invalid)}
        prompt = next((m["content"] for m in reversed(params["messages"]) if m.get("role") == "user"), "")
        prompt = prompt if isinstance(prompt, str) else "".join(b.get("text", "") for b in prompt)
        answer = self.script(SeenRequest("/v1/messages", params, prompt))
        if isinstance(answer, Fault):
            kind = ERROR_TYPES.get(answer.status, "api_error")
            return {"type": "errored", "error": error_body(kind, answer.error)}
        return {"type": "succeeded", "message": self._message(params, prompt, answer)}

    @staticmethod
    def _invalid(params: dict) -> str | None:
        """Why a request's params are refused: Anthropic checks them as it processes the batch, not on creation."""
        missing = [name for name in ("model", "max_tokens", "messages") if name not in params]
        if missing:
            return f"{missing[0]}: Field required"
        if "temperature" in params and "top_p" in params:
            return "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
        return None

    @staticmethod
    def _message(params: dict, prompt: str, reply: Reply) -> dict:
        """A Message: the reply cut at a stop sequence (not included) or at max_tokens, with its usage."""
        stops = params.get("stop_sequences") or []
        text, finish, generated = protocol.finish(reply.text, params["max_tokens"], stops, keep_stop=False)
        matched = next((s for s in stops if reply.text.startswith(s, len(text))), None)
        content = [{"type": "text", "text": text}]
        if reply.reasoning is not None:
            content.insert(0, {"type": "thinking", "thinking": reply.reasoning, "signature": "c2lnbmVk"})
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": content,
            "stop_reason": reply.finish or STOP_REASONS[finish],
            "stop_sequence": matched if finish == "stop_sequence" else None,
            "usage": {"input_tokens": protocol.count_tokens(prompt), "output_tokens": generated},
        }

    def _view(self, batch: Batch) -> dict:
        """The MessageBatch object."""
        kinds = [result["type"] for result in batch.results.values()] if batch.status == "ended" else []
        counts = {kind: kinds.count(kind) for kind in ("succeeded", "errored", "canceled", "expired")}
        counts["processing"] = len(batch.requests) - len(kinds)
        ended = batch.status == "ended"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": counts,
            "created_at": stamp(batch.created),
            "expires_at": stamp(batch.created + timedelta(hours=24).total_seconds()),
            "ended_at": stamp(batch.ended),
            "cancel_initiated_at": stamp(batch.cancel_initiated),
            "archived_at": stamp(batch.archived),
            "results_url": f"{self.url}{ROUTE}/{batch.id}/results" if ended and not batch.archived else None,
        }

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        path = urlsplit(handler.path)
        try:
            if handler.headers.get("x-api-key") != self.api_key:
                raise Refused(401, "authentication_error", "invalid x-api-key")
            if not handler.headers.get("anthropic-version"):
                raise Refused(400, "invalid_request_error", "anthropic-version: header is required")
            with self.lock:
                if self.refuse:
                    raise self.refuse.pop(0)
                creating = (method, path.path) == ("POST", ROUTE)
                drop = self.drop_creates.pop(0) if creating and self.drop_creates else None
                if drop != "before_create":
                    answer = self._route(method, path.path, parse_qs(path.query), body)
        except Refused as refused:
            wait = {"retry-after": str(refused.retry_after)} if refused.retry_after is not None else {}
            return self._send(handler, refused.status, error_body(refused.kind, refused.message), headers=wait)
        if drop is not None:  # closed with no answer: the client cannot tell whether the batch was made
            handler.close_connection = True
            return
        if isinstance(answer, bytes):
            return self._send(handler, 200, answer, "application/binary")
        self._send(handler, 200, answer)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> dict | bytes:
        if path == ROUTE and method == "POST":
            return self._create(body)
        if path == ROUTE and method == "GET":
            return self._list(query)
        parts = path.removeprefix(ROUTE + "/").split("/")
        if not path.startswith(ROUTE + "/") or len(parts) > 2:
            raise Refused(404, "not_found_error", f"no route {method} {path}")
        batch = self.batches.get(parts[0])
        if batch is None:
            raise Refused(404, "not_found_error", f"no message batch {parts[0]}")
        self._advance(batch)
        action = parts[1] if len(parts) == 2 else ""
        if (method, action) == ("GET", ""):
            return self._view(batch)
        if (method, action) == ("POST", "cancel"):
            if batch.status == "in_progress":
                batch.status, batch.cancel_initiated = "canceling", time.time()
            return self._view(batch)
        if (method, action) == ("GET", "results"):
            if batch.status != "ended" or batch.archived:
                raise Refused(400, "invalid_request_error", f"no results for message batch {batch.id}")
            order = [r["custom_id"] for r in batch.requests][::-1]  # any order: results follow no request order
            lines = [json.dumps({"custom_id": cid, "result": batch.results[cid]}) for cid in order]
            return "".join(line + "\n" for line in lines).encode()
        raise Refused(404, "not_found_error", f"no route {method} {path}")

    def _create(self, body: bytes) -> dict:
        if len(body) > self.max_bytes:
            raise Refused(413, "request_too_large", f"Request exceeds the maximum size of {self.max_bytes} bytes")
        try:
            requests = json.loads(body)["requests"]
        except (ValueError, KeyError, TypeError):
            raise Refused(400, "invalid_request_error", "requests: Field required") from None
        if not isinstance(requests, list) or not 1 <= len(requests) <= self.max_requests:
            count = len(requests) if isinstance(requests, list) else 0
            raise Refused(
                400, "invalid_request_error", f"requests: {count} given, a batch holds 1 to {self.max_requests}"
            )
        seen: set[str] = set()
        for number, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                raise Refused(400, "invalid_request_error", f"requests.{number}.custom_id: invalid {custom_id!r}")
            if custom_id in seen:
                raise Refused(400, "invalid_request_error", f"requests.{number}.custom_id: {custom_id} is repeated")
            seen.add(custom_id)
            if not isinstance(request.get("params"), dict):
                raise Refused(400, "invalid_request_error", f"requests.{number}.params: Input should be an object")
        batch = Batch(f"msgbatch_{uuid.uuid4().hex[:24]}", requests, time.time())
        self.batches[batch.id] = batch
        self.submitted.update(seen)
        return self._view(batch)

    def _list(self, query: dict[str, list[str]]) -> dict:
        newest = list(self.batches.values())[::-1]  # in the order they were created, newest first
        for batch in newest:
            self._advance(batch)
        after = (query.get("after_id") or [None])[0]
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        limit = int((query.get("limit") or ["20"])[0])
        page = [self._view(b) for b in newest[:limit]]
        return {
            "data": page,
            "has_more": len(newest) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: dict | bytes,
        kind: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("request-id", f"req_{uuid.uuid4().hex}")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
