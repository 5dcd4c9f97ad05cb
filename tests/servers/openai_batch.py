"""OpenAI's Files and Batch API as a test server, its batches answered by a scripted model.

Source: OpenAI's API reference, as its OpenAPI document writes it (github.com/openai/openai-openapi,
`openapi.yaml`): `POST /v1/files` (CreateFileRequest: multipart `file` and `purpose`; "The Batch API only
supports `.jsonl` files up to 200 MB in size") answering an OpenAIFile (`object: "file"`), `GET /v1/files/{id}`,
`GET /v1/files/{id}/content`; `POST /v1/batches` (CreateBatchRequest: `input_file_id`, `endpoint`,
`completion_window` "24h", `metadata` of at most 16 keys of 64 characters and values of 512), `GET /v1/batches`
(ListBatchesResponse), `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, each answering a Batch (`object:
"batch"`, `status`, `request_counts {total, completed, failed}`, `output_file_id`, `error_file_id`, `errors
{object: "list", data: [BatchError {code, message, param, line}]}`, the `*_at` timestamps, `metadata`); errors
as ErrorResponse `{"error": {"message", "type", "param", "code"}}`. Result lines are BatchRequestOutput, the
request lines BatchRequestInput (the 2025 document's schemas); a refused request's line carries its status and
error body in `response` (openai/openai-openapi issue #302), an expired one `error.code: batch_expired`
(OpenAI's Batch guide). Where the reference names no error code (a bad line, a file over the limit), the
codes here are this server's own words.

Like OpenAI, it validates a batch's file when the batch is created: a line that is not JSON, lacks a field,
repeats a custom_id or sends to another endpoint, or more requests than `max_requests`, fails the batch
(`status: failed`, the problems in `errors.data` with their line numbers); a file over `max_bytes` is refused at
upload (400). Requests are answered by a script of `models.py` (default `paper_model`): each line's body becomes
a `chat.completion` or `text_completion` with `usage`, cut at its `max_tokens` and `stop` as the live routes do.

A batch runs when it is read after `delay` seconds (never while `hold` is set, until `finish`); nothing runs in
the background, so tests do not depend on timing. Hooks: `fail_ids` (custom_ids answered with a 500 in the error
file), `lose_ids` (result lines a completed batch leaves out), `advance` (answer some items of a running batch),
`expire` (end a batch as expired with what it answered), `fail` (fail a whole batch), `refuse_next` (answer the
next calls with an HTTP error, e.g. 429), `drop_creates` (the next `POST /v1/batches` calls read and then closed
without an answer, as a reset connection or a proxy's timeout leaves them: `"after_create"` makes the batch
first, `"before_create"` does not), `submitted` and `answered` (every line ever submitted or answered, per
custom_id: nothing may be paid twice), `batches` (every batch object, also listed by `GET /v1/batches`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from tests.servers import protocol
from tests.servers.models import Fault, Reply, Script, SeenRequest, paper_model

ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations")
API_KEY = "sk-test-batch-key"


def error_body(message: str, kind: str = "invalid_request_error", param=None, code=None) -> dict:
    """OpenAI's ErrorResponse."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class OpenAIBatchServer:
    """Runs in a background thread on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        script: Script = paper_model,
        api_key: str = API_KEY,
        delay: float = 0.0,
        max_requests: int = 50_000,
        max_bytes: int = 200_000_000,
    ):
        self.script, self.api_key, self.delay = script, api_key, delay
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.hold = False  # True: batches stay in progress until `finish`
        self.fail_ids: set[str] = set()
        self.lose_ids: set[str] = set()  # custom_ids whose result lines a completed batch leaves out (a provider fault)
        self.refuse_next: list[tuple[int, float | None]] = []  # (status, Retry-After) for the next calls
        self.drop_creates: list[Literal["after_create", "before_create"]] = []  # the next creates, unanswered
        self.files: dict[str, dict] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.submitted: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self._lines: dict[str, list[dict]] = {}  # a batch's request lines, in file order
        self._results: dict[str, dict[str, dict]] = {}  # a batch's result lines by custom_id
        self.lock = threading.RLock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart (delayed ACKs)

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server._serve(self, "GET")

            def do_POST(self):
                server._serve(self, "POST")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        # a short poll: `shutdown` waits for it (the default, 0.5 s, would be most of a test's time)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> OpenAIBatchServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- test hooks -----------------------------------------------------------------------------------

    def finish(self, batch_id: str) -> None:
        """Answer every item of a running batch and complete it."""
        with self.lock:
            self.advance(batch_id, len(self._lines[batch_id]))
            self._end(batch_id, "completed")

    def advance(self, batch_id: str, items: int) -> None:
        """Answer the next `items` unanswered items of a running batch."""
        with self.lock:
            batch = self.batches[batch_id]
            batch["status"], batch["in_progress_at"] = "in_progress", batch["in_progress_at"] or int(time.time())
            waiting = [line for line in self._lines[batch_id] if line["custom_id"] not in self._results[batch_id]]
            for line in waiting[:items]:
                self._results[batch_id][line["custom_id"]] = self._answer(line)
            self._count(batch_id)

    def expire(self, batch_id: str, answered: int = 0, list_unfinished: bool = True) -> None:
        """End a batch as expired after answering `answered` items; the others get `batch_expired` lines in the
        error file (OpenAI's guide), or none with `list_unfinished=False`."""
        with self.lock:
            self.advance(batch_id, answered)
            if list_unfinished:
                for line in self._lines[batch_id]:
                    self._results[batch_id].setdefault(
                        line["custom_id"],
                        self._output(
                            line["custom_id"],
                            None,
                            {
                                "code": "batch_expired",
                                "message": "This request could not be executed before the completion window expired.",
                            },
                        ),
                    )
            self._end(batch_id, "expired")

    def fail(self, batch_id: str, message: str = "The batch could not be run.", code: str = "batch_failed") -> None:
        with self.lock:
            self._fail(self.batches[batch_id], [{"code": code, "message": message, "param": None, "line": None}])

    # -- plumbing -------------------------------------------------------------------------------------

    def _send(self, handler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header(
            "Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json"
        )
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _serve(self, handler, method: str) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        path = urlsplit(handler.path)
        if handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            message = (
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
            )
            return self._send(handler, 401, error_body(message, code="invalid_api_key"))
        with self.lock:
            refusal = self.refuse_next.pop(0) if self.refuse_next else None
        if refusal is not None:
            status, wait = refusal
            headers = {"Retry-After": str(wait)} if wait is not None else {}
            return self._send(
                handler, status, error_body(f"HTTP {status} from the test server", "server_error"), headers
            )
        parts = path.path.strip("/").split("/")  # v1, files|batches, [id], [content|cancel]
        with self.lock:
            creating = (method, parts) == ("POST", ["v1", "batches"])
            drop = self.drop_creates.pop(0) if creating and self.drop_creates else None
            if drop != "before_create":
                status, answer = self._route(method, parts, body, handler.headers, parse_qs(path.query))
        if drop is not None:  # closed with no answer: the client cannot tell whether the batch was made
            handler.close_connection = True
            return
        self._send(handler, status, answer)

    def _route(self, method: str, parts: list[str], body: bytes, headers, query: dict) -> tuple[int, Any]:
        match method, parts:
            case "POST", ["v1", "files"]:
                return self._upload(body, headers.get("Content-Type", ""))
            case "GET", ["v1", "files", file_id] if file_id in self.files:
                return 200, self.files[file_id]
            case "GET", ["v1", "files", file_id, "content"] if file_id in self.files:
                return 200, self.contents[file_id]
            case "GET", ["v1", "files", file_id, *_]:
                return 404, error_body(f"No such File object: {file_id}", param="id")
            case "POST", ["v1", "batches"]:
                return self._create(json.loads(body or b"{}"))
            case "GET", ["v1", "batches"]:
                return 200, self._list(int((query.get("limit") or ["20"])[0]), (query.get("after") or [None])[0])
            case "GET", ["v1", "batches", batch_id] if batch_id in self.batches:
                self._run_if_due(batch_id)
                return 200, self.batches[batch_id]
            case "POST", ["v1", "batches", batch_id, "cancel"] if batch_id in self.batches:
                return self._cancel(batch_id)
            case _, ["v1", "batches", batch_id, *_]:
                return 404, error_body(f"No batch found with id '{batch_id}'.", param="batch_id")
        return 404, error_body(f"Unknown request URL: {method} /{'/'.join(parts)}.", code="unknown_url")

    # -- files ----------------------------------------------------------------------------------------

    def _upload(self, body: bytes, content_type: str) -> tuple[int, Any]:
        form = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        fields = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
        if "file" not in fields or "purpose" not in fields:
            return 400, error_body(
                "A file and its purpose are required.", param="file" if "file" not in fields else "purpose"
            )
        purpose = fields["purpose"].get_content().strip()
        data, filename = fields["file"].get_payload(decode=True), fields["file"].get_filename() or "file"
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return 400, error_body("The Batch API only supports .jsonl files.", param="file")
        if purpose == "batch" and len(data) > self.max_bytes:
            message = f"File is too large: {len(data)} bytes; batch input files may be up to {self.max_bytes} bytes."
            return 400, error_body(message, param="file", code="file_too_large")
        return 200, self._store(data, filename, purpose)

    def _store(self, data: bytes, filename: str, purpose: str) -> dict:
        file_id = "file-" + uuid.uuid4().hex[:24]
        self.contents[file_id] = data
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "expires_at": None,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        return self.files[file_id]

    # -- batches --------------------------------------------------------------------------------------

    def _create(self, request: dict) -> tuple[int, Any]:
        file_id, endpoint, metadata = request.get("input_file_id"), request.get("endpoint"), request.get("metadata")
        if file_id not in self.files:
            return 404, error_body(f"No such File object: {file_id}", param="input_file_id")
        if self.files[file_id]["purpose"] != "batch":
            return 400, error_body("The input file must be uploaded with the purpose 'batch'.", param="input_file_id")
        if endpoint not in ENDPOINTS:
            return 400, error_body(f"Invalid 'endpoint': {endpoint!r}.", param="endpoint")
        if request.get("completion_window") != "24h":
            return 400, error_body("Invalid 'completion_window': only '24h' is supported.", param="completion_window")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or any(len(str(k)) > 64 or not isinstance(v, str) or len(v) > 512 for k, v in metadata.items())
        ):
            return 400, error_body("Invalid 'metadata': up to 16 string pairs (keys 64, values 512).", param="metadata")
        now = int(time.time())
        batch_id = "batch_" + uuid.uuid4().hex[:24]
        batch = {"id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": file_id}
        batch |= {"completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None}
        batch |= {"created_at": now, "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None}
        batch |= {"completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None}
        batch |= {"cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        batch |= {"metadata": metadata}
        self.batches[batch_id], self._results[batch_id] = batch, {}
        lines, errors = self._validate(self.contents[file_id], endpoint)
        self._lines[batch_id] = lines
        if errors:
            self._fail(batch, errors)
        else:
            batch["request_counts"]["total"] = len(lines)
            self.submitted.update(line["custom_id"] for line in lines)
        return 200, dict(batch)

    def _validate(self, data: bytes, endpoint: str) -> tuple[list[dict], list[dict]]:
        """The request lines of a batch file, and what is wrong with them (BatchError each)."""
        lines, errors, seen = [], [], set()

        def wrong(number: int, code: str, message: str, param: str | None = None) -> None:
            errors.append({"code": code, "message": message, "param": param, "line": number})

        for number, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                wrong(number, "invalid_json_line", "This line is not parseable as valid JSON.")
                continue
            missing = [k for k in ("custom_id", "method", "url", "body") if not isinstance(line, dict) or k not in line]
            if missing:
                wrong(number, "missing_required_parameter", f"Missing required parameter: '{missing[0]}'.", missing[0])
            elif line["method"] != "POST":
                wrong(number, "invalid_method", "Only POST is supported.", "method")
            elif line["url"] != endpoint:
                wrong(number, "mismatched_endpoint", f"The url {line['url']} is not the batch's {endpoint}.", "url")
            elif line["custom_id"] in seen:
                wrong(number, "duplicate_custom_id", f"The custom_id '{line['custom_id']}' is not unique.", "custom_id")
            elif not isinstance(line["body"], dict) or not line["body"].get("model"):
                wrong(number, "missing_required_parameter", "Missing required parameter: 'body.model'.", "body.model")
            else:
                seen.add(line["custom_id"])
                lines.append(line)
        if len(lines) + len(errors) > self.max_requests:
            message = (
                f"The batch input file holds {len(lines) + len(errors)} requests; the limit is {self.max_requests}."
            )
            errors.append({"code": "too_many_requests", "message": message, "param": None, "line": None})
        return lines, errors

    def _fail(self, batch: dict, errors: list[dict]) -> None:
        batch |= {"status": "failed", "failed_at": int(time.time()), "errors": {"object": "list", "data": errors}}

    def _run_if_due(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        if batch["status"] == "validating":
            batch["status"], batch["in_progress_at"] = "in_progress", int(time.time())
        if self.hold or time.time() - batch["created_at"] < self.delay:
            return
        if batch["status"] == "cancelling":  # cancelled with what it had answered
            self._end(batch_id, "cancelled")
        elif batch["status"] == "in_progress":
            self.finish(batch_id)

    def _cancel(self, batch_id: str) -> tuple[int, Any]:
        batch = self.batches[batch_id]
        if batch["status"] not in ("validating", "in_progress"):
            return 400, error_body(f"Cannot cancel a batch with status '{batch['status']}'.")
        batch |= {"status": "cancelling", "cancelling_at": int(time.time())}
        return 200, dict(batch)

    def _end(self, batch_id: str, status: str) -> None:
        """Write the output and error files of what the batch answered, and end it with `status`."""
        batch = self.batches[batch_id]
        results = [r for r in self._results[batch_id].values() if r["custom_id"] not in self.lose_ids]
        good = [r for r in results if r["response"] and r["response"]["status_code"] == 200]
        bad = [r for r in results if r not in good]
        for key, lines in (("output_file_id", good), ("error_file_id", bad)):
            if lines:
                jsonl = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
                batch[key] = self._store(jsonl, f"{batch_id}_{key[:-8]}.jsonl", "batch_output")["id"]
        now = int(time.time())
        batch |= {"status": status, "finalizing_at": now, f"{status}_at": now}
        self._count(batch_id)

    def _count(self, batch_id: str) -> None:
        results = self._results[batch_id].values()
        completed = sum(1 for r in results if r["response"] and r["response"]["status_code"] == 200)
        self.batches[batch_id]["request_counts"] |= {"completed": completed, "failed": len(results) - completed}

    def _list(self, limit: int, after: str | None) -> dict:
        ids = list(reversed(self.batches))  # newest first
        start = ids.index(after) + 1 if after in ids else 0
        page = [self.batches[i] for i in ids[start : start + limit]]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(ids),
        }

    # -- answers --------------------------------------------------------------------------------------

    def _answer(self, line: dict) -> dict:
        """One request line run: its BatchRequestOutput (a 500 for `fail_ids`, the script's Fault, or a reply)."""
        custom_id, route, payload = line["custom_id"], line["url"], line["body"]
        if custom_id in self.fail_ids:
            body = error_body("The server had an error while processing your request.", "server_error")
            return self._output(custom_id, {"status_code": 500, "request_id": uuid.uuid4().hex, "body": body}, None)
        answer = self.script(SeenRequest(route, payload, protocol.prompt_of(route, payload) or ""))
        if isinstance(answer, Fault):
            body = error_body(answer.error, answer.error_type)
            return self._output(
                custom_id, {"status_code": answer.status, "request_id": uuid.uuid4().hex, "body": body}, None
            )
        self.answered[custom_id] += 1  # a reply is what is paid for
        body = self._completion(route, payload, answer)
        return self._output(custom_id, {"status_code": 200, "request_id": uuid.uuid4().hex, "body": body}, None)

    @staticmethod
    def _completion(route: str, payload: dict, reply: Reply) -> dict:
        prompt = protocol.prompt_of(route, payload) or ""
        stop = payload.get("stop") or []
        text, finish, tokens = protocol.finish(reply.text, payload.get("max_tokens"), stop, keep_stop=False)
        reason = reply.finish or protocol.OPENAI_FINISH[finish]
        choice = protocol.chat_choice(text, reason) if route == protocol.CHAT else protocol.text_choice(text, reason)
        usage = protocol.usage(protocol.count_tokens(prompt), tokens)
        return protocol.completion(route, choice, model=payload.get("model"), usage=usage, system_fingerprint=None)

    @staticmethod
    def _output(custom_id: str, response: dict | None, error: dict | None) -> dict:
        return {
            "id": "batch_req_" + uuid.uuid4().hex[:24],
            "custom_id": custom_id,
            "response": response,
            "error": error,
        }
