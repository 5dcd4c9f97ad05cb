"""A TGI-, vLLM- and SGLang-compatible test server, scripted per request, used only through real HTTP clients.

`flavor` picks whose protocol it speaks: `tgi` (the default), `vllm` or `sglang`, as `protocol.py` writes
them down (routes, bodies, error bodies and wordings, reasoning fields, stream events, metric names, each
from the real server's document or source). The vLLM flavor is checked against the real server
(`tests/generation/endpoints/test_real_vllm.py`).

Routes: `POST /` and `POST /generate` (TGI's, served whatever the flavor), `POST /v1/completions`,
`POST /v1/chat/completions`, `GET /info` (TGI), `GET /health`, `GET /v1/models`, `GET /version` (vLLM),
`GET /health_generate` and `GET /server_info` (SGLang: 200 once it generates, 503 while `starting`; its
version), `POST /tokenize` (vLLM, SGLang), `GET /metrics` (when `metrics_batch` is set).

A test decides what the "model" answers with `server.script = callable(request) -> Reply | Fault`
(`models.py`); the default, `paper_model`, answers each of the three paper prompts in the expected format.
Every request is recorded in `server.requests`.

Like the real servers, it refuses a prompt over the context in their words (TGI: prompt + `max_new_tokens`
over `max_total_tokens`, 422; vLLM serves one that fits with `max_tokens` lowered, as
`serve/utils/api_utils.py` get_max_tokens does); it returns top-token alternatives when asked (`top_n_tokens`
on `/generate`, after TGI's sampling warpers; `logprobs`/`top_logprobs` on chat; `logprobs` on vLLM's and
SGLang's `/v1/completions`); `finish_reason: "abort"` when a reply says so; and `server.down = True` makes it
drop every connection, as a crashed or unreachable replica does.

`"stream": true` on the OpenAI routes streams the reply as server-sent events, a token a chunk, as vLLM
does: chat chunks carry `delta` (`role` first, then `content`, reasoning in the flavor's field) and
`logprobs.content`; completion chunks `text` and `logprobs`; the finish reason in the last choice; with
`stream_options.include_usage` a last chunk with no choices and the usage; then `data: [DONE]`.
`Reply.token_delay` spaces the tokens, `Reply.cut_after` drops the connection mid-stream,
`Reply.stream_error` ends the stream with an error event, as vLLM does when its engine fails after the
reply began.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers import protocol
from tests.servers.models import (
    Fault,
    Reply,
    SeenRequest,
    paper_model,
)

FINGERPRINT = f"{protocol.TGI_VERSION}-bft-test"  # the `system_fingerprint` of every flavor's answers


def _apply_prefill(prompt: str, text: str) -> str:
    """If the prompt ends with text the reply contains (an answer prefill), continue after it."""
    for size in range(min(len(prompt), 40), 2, -1):
        tail = prompt[-size:]
        if tail.strip() and tail in text:
            return text[text.index(tail) + size :]
    return text


class TGITestServer:
    """Runs in a background thread on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        script: Callable[[SeenRequest], Reply | Fault] = paper_model,
        model_id: str | None = "bft/test-model",  # None: /v1/models lists nothing, as `transformers serve PATH`
        tgi_info: bool = True,
        honour_stop: bool = True,
        flavor: str = "tgi",
        port: int = 0,  # 0: any free port
    ):
        self.script = script
        self.flavor = flavor  # one of protocol.FLAVORS
        # TGI computes `top_tokens` log-probabilities after its sampling warpers (temperature, top-p); vLLM V1
        # returns the model's own. True: this server does as TGI does.
        self.warp_alternatives = flavor == "tgi"
        self.tgi_info = tgi_info and flavor == "tgi"  # False: no /info, as vLLM and SGLang
        self.honour_stop = honour_stop  # False: ignore `stop`, as `transformers serve` does on /v1/completions
        self.model_id = model_id
        self.model_root: str | None = None  # vLLM/SGLang `root`: the path the model was loaded from (default: the id)
        self.model_sha = "0123456789abcdef0123456789abcdef01234567"
        self.max_concurrent_requests = 128
        self.max_input_tokens = 4095
        self.max_total_tokens = 8192
        self.down = False
        self.starting = False  # True: SGLang's /health_generate says 503, as while its server starts
        self.requests: list[SeenRequest] = []
        self.tokenized: list[str] = []  # the texts `/tokenize` counted
        self.tokenize_route = True  # False: no `/tokenize` (404), as a server that cannot count for bft
        self.request_times: list[float] = []  # when each recorded request arrived (monotonic)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.tokens_streamed = 0  # tokens written to streams, over all requests (a client that hangs up stops them)
        # Prometheus /metrics in the flavor's names, as if `metrics_batch` sequences run and the rest wait
        # (None: no /metrics, as servers started without them)
        self.metrics_batch: int | None = None
        self.metrics_cost = 0.0  # seconds each /metrics read takes (vLLM's CPU build: 14 ms of a core)
        self.metrics_reads = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server._get(self)

            def do_POST(self):
                server._post(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> TGITestServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- plumbing -------------------------------------------------------------------------------------

    @staticmethod
    def _send(handler, status: int, body: Any, content_type: str = "application/json", headers=None) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _drop(handler) -> None:
        handler.close_connection = True
        handler.connection.shutdown(2)

    def _error(self, handler, status: int, message: str, kind: str, retry_after=None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._send(handler, status, protocol.error_body(self.flavor, status, message, kind), headers=headers)

    def _tgi_error(self, handler, status: int, message: str, kind: str) -> None:
        """An error in TGI's body whatever the flavor (a 404, a body that is not JSON)."""
        self._send(handler, status, protocol.error_body("tgi", status, message, kind))

    # -- routes ---------------------------------------------------------------------------------------

    def _get(self, handler) -> None:
        if self.down:
            return self._drop(handler)
        if handler.path == "/health":
            return self._send(handler, 200, "", "text/plain")
        if handler.path == "/info" and self.tgi_info:
            limits = {"max_input_tokens": self.max_input_tokens, "max_total_tokens": self.max_total_tokens}
            body = protocol.info(
                self.model_id, model_sha=self.model_sha, max_concurrent_requests=self.max_concurrent_requests, **limits
            )
            return self._send(handler, 200, body)
        if handler.path == "/v1/models":
            cards = [self._model_card()] if self.model_id else []
            return self._send(handler, 200, protocol.model_list(cards))
        if handler.path == "/version" and self.flavor == "vllm":
            return self._send(handler, 200, {"version": protocol.VLLM_VERSION})
        if handler.path == "/health_generate" and self.flavor == "sglang":
            return self._send(handler, 503 if self.starting else 200, "", "text/plain")
        if handler.path == "/server_info" and self.flavor == "sglang":
            return self._send(handler, 200, {"version": protocol.SGLANG_VERSION, "frontend": "python"})
        if handler.path == "/metrics" and self.metrics_batch is not None:
            self.metrics_reads += 1
            time.sleep(self.metrics_cost)
            return self._send(handler, 200, self._metrics(), protocol.METRICS_CONTENT_TYPE)
        self._tgi_error(handler, 404, "not found", "not_found")

    def _model_card(self) -> dict:
        return protocol.model_card(self.model_id, self.flavor, self.max_total_tokens, self.model_root)

    def _metrics(self) -> str:
        with self.lock:
            running = min(self.in_flight, self.metrics_batch)
            waiting = self.in_flight - running
        model = "bft/test-model" if self.flavor != "tgi" else None
        return protocol.load_metrics(self.flavor, running, waiting, model)

    def _post(self, handler) -> None:
        if self.down:
            return self._drop(handler)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        if len(body) < length:  # the client went away mid-body (a killed run): no request was made
            handler.close_connection = True
            return
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return self._tgi_error(handler, 422, "invalid JSON", "validation")
        route = handler.path
        if route == "/tokenize" and self.flavor in ("vllm", "sglang") and self.tokenize_route:
            return self._tokenize(handler, payload)
        prompt = protocol.prompt_of(route, payload)
        if prompt is None:
            return self._tgi_error(handler, 404, f"no route {route}", "not_found")
        seen = SeenRequest(route, payload, prompt, {k.lower(): v for k, v in handler.headers.items()})
        max_new = protocol.max_new_tokens_of(payload) or 0
        given = protocol.count_tokens(prompt)
        if self.flavor == "vllm" and given <= self.max_total_tokens and given + max_new > self.max_total_tokens:
            # vLLM refuses only a prompt over the context; one that leaves less than max_tokens is served
            # with max_tokens lowered (vllm/entrypoints/serve/utils/api_utils.py, get_max_tokens)
            payload = {**payload, "max_tokens": self.max_total_tokens - given}
        elif given + max_new > self.max_total_tokens:
            with self.lock:
                self.requests.append(seen)
            status, refusal = protocol.too_long(self.flavor, self.max_total_tokens, given, max_new)
            return self._send(handler, status, refusal)
        stops = payload.get("stop") or (payload.get("parameters") or {}).get("stop") or []
        if (refused := protocol.too_many_stops(self.flavor, len(stops) if isinstance(stops, list) else 1)) is not None:
            with self.lock:
                self.requests.append(seen)
            return self._send(handler, *refused)
        if self.flavor == "tgi" and route == protocol.CHAT and not 0 < payload.get("top_p", 0.5) < 1:
            with self.lock:
                self.requests.append(seen)
            return self._error(handler, 422, protocol.TOP_P_INVALID, "validation")
        with self.lock:
            self.requests.append(seen)
            self.request_times.append(time.monotonic())
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            answer = self.script(seen)
            if answer.delay:
                time.sleep(answer.delay)
            if isinstance(answer, Fault):
                return self._fault(handler, answer)
            self._answer(handler, route, payload, prompt, answer)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _tokenize(self, handler, payload: dict) -> None:
        """`POST /tokenize`: a prompt's or a chat's tokens; a chat template adds none."""
        if "messages" in payload:
            text = " ".join(m.get("content") or "" for m in payload["messages"])
        else:
            text = payload.get("prompt", "")
        with self.lock:
            self.tokenized.append(text)
        self._send(handler, 200, protocol.tokenize_response(protocol.count_tokens(text), self.max_total_tokens))

    def _fault(self, handler, fault: Fault) -> None:
        if fault.reset:
            return self._drop(handler)
        if fault.body is not None:
            return self._send(handler, fault.status, fault.body)
        self._error(handler, fault.status, fault.error, fault.error_type, retry_after=fault.retry_after)

    # -- answers --------------------------------------------------------------------------------------

    def _answer(self, handler, route: str, payload: dict, prompt: str, reply: Reply) -> None:
        text = reply.text if route == protocol.CHAT else _apply_prefill(prompt, reply.text)
        prompt_tokens = protocol.count_tokens(prompt)
        if route in protocol.GENERATE:
            body = self._generated(payload.get("parameters") or {}, prompt, text, reply)
            headers = {"x-prompt-tokens": str(prompt_tokens)}  # real TGI says the prompt's size here
            return self._send(handler, 200, [body] if route == "/" else body, headers=headers)
        stop = (payload.get("stop") or []) if self.honour_stop else []
        text, finish, n = protocol.finish(text, payload.get("max_tokens"), stop, keep_stop=False)
        finish = reply.finish or protocol.OPENAI_FINISH[finish]
        usage = protocol.usage(prompt_tokens, n)
        if payload.get("stream"):
            return self._stream(handler, route, payload, text, finish, reply, usage)
        replied = protocol.tokens(text)
        if route == protocol.COMPLETIONS:
            logprobs = None  # TGI returns none on /v1/completions
            if payload.get("logprobs") and self.flavor in ("vllm", "sglang"):
                logprobs = protocol.completion_logprobs(replied, [_alternatives(w, reply) for w in replied])
            choice = protocol.text_choice(text, finish, logprobs)
        else:
            logprobs = None
            if payload.get("logprobs"):
                logprobs = protocol.chat_logprobs((w, -0.1, _alternatives(w, reply)) for w in replied)
            choice = protocol.chat_choice(text, finish, logprobs, reply.reasoning, self.flavor)
        body = protocol.completion(route, choice, model=self.model_id, usage=usage, system_fingerprint=FINGERPRINT)
        self._send(handler, 200, body)

    def _generated(self, params: dict, prompt: str, text: str, reply: Reply) -> dict:
        """TGI's GenerateResponse for `POST /generate` (and `POST /`)."""
        text, finish, n = protocol.finish(text, params.get("max_new_tokens"), params.get("stop") or [], keep_stop=True)
        if not params.get("details", True):
            return protocol.generate_response(text)
        replied = protocol.tokens(text)
        top_tokens = None
        if params.get("top_n_tokens"):
            warp = (params.get("temperature") or 1.0, params.get("top_p") or 1.0) if self.warp_alternatives else None
            top_tokens = [
                [protocol.token(i, t, lp) for t, lp in _alternatives(w, reply, warp)] for i, w in enumerate(replied)
            ]
        details = protocol.details(
            finish,
            n,
            seed=params.get("seed"),
            prefill=[protocol.prefill_token(i, w) for i, w in enumerate(prompt.split())]
            if params.get("decoder_input_details")
            else [],
            generated=[protocol.token(i, w) for i, w in enumerate(replied)],
            top_tokens=top_tokens,
        )
        return protocol.generate_response(text, details)

    def _stream(self, handler, route: str, payload: dict, text: str, finish: str, reply: Reply, usage: dict) -> None:
        """The reply as server-sent events, a token a chunk (module docstring), in chunked transfer encoding."""
        handler.send_response(200)
        handler.send_header("Content-Type", protocol.SSE_CONTENT_TYPE)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(data: dict | str) -> None:
            raw = protocol.event(data)
            handler.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            handler.wfile.flush()

        def end() -> None:
            send(protocol.DONE)
            handler.wfile.write(b"0\r\n\r\n")

        chat = route == protocol.CHAT
        head = protocol.head(route, model=self.model_id)
        wants_logprobs = bool(payload.get("logprobs")) and (chat or self.flavor in ("vllm", "sglang"))
        if chat:
            send(protocol.chunk(head, delta={"role": "assistant", "content": ""}, logprobs=None))
            if reply.reasoning is not None:
                field = protocol.reasoning_field(self.flavor)
                send(protocol.chunk(head, delta={field: reply.reasoning}, logprobs=None))
        offset = 0
        for number, token in enumerate(protocol.tokens(text) if text else []):
            if reply.cut_after is not None and number >= reply.cut_after:
                return self._drop(handler)
            if reply.token_delay:
                time.sleep(reply.token_delay)
            top = _alternatives(token, reply)
            if chat:
                logprobs = protocol.chat_logprobs([(token, -0.1, top)]) if wants_logprobs else None
                send(protocol.chunk(head, delta={"content": token}, logprobs=logprobs))
            else:
                logprobs = protocol.completion_logprobs([token], [top], offset) if wants_logprobs else None
                send(protocol.chunk(head, text=token, logprobs=logprobs))
            offset += len(token)
            with self.lock:
                self.tokens_streamed += 1
        if reply.stream_error is not None:  # the engine failed after the reply began: an event, then [DONE]
            send({"error": reply.stream_error})
            return end()
        last = {"delta": {}} if chat else {"text": ""}
        send(protocol.chunk(head, finish, **last, logprobs=None))
        if (payload.get("stream_options") or {}).get("include_usage"):
            send(protocol.usage_chunk(head, usage, FINGERPRINT))
        end()


def _alternatives(token: str, reply: Reply, warp: tuple[float, float] | None = None) -> list[tuple[str, float]]:
    """Top alternatives at `token`: the scripted ones (probabilities), else the token itself.

    `warp` = (temperature, top_p) applies the sampling warpers first, as TGI does before it reports them
    (transformers' TopPLogitsWarper: the least likely tokens whose mass is at most 1 - top_p go).
    """
    scripted = (reply.top or {}).get(token.strip())
    if not scripted:
        return [(token, -0.1)]
    probs = dict(scripted)
    if warp is not None:
        temperature, top_p = warp
        probs = {t: p ** (1 / temperature) for t, p in probs.items()}
        total = sum(probs.values())
        probs = {t: p / total for t, p in probs.items()}
        removed, kept = 0.0, {}
        for t, p in sorted(probs.items(), key=lambda item: item[1]):
            if removed + p <= 1 - top_p + 1e-12 and len(kept) + 1 < len(probs):
                removed += p
                continue
            kept[t] = p
        total = sum(kept.values())
        probs = {t: p / total for t, p in kept.items()}
    return [(token[: len(token) - len(token.lstrip())] + t, math.log(p)) for t, p in probs.items()]
