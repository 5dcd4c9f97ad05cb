"""How a server's failure reads: an HTTP status, its error body and `Retry-After`, sorted into bft's kinds.

TGI, vLLM and SGLang each word their errors their own way; this module is the one place that knows
those wordings and turns them into the error family of `errors.py`: `EndpointError` (no request can
succeed), `RequestRejected` (this input is refused, with its reason) or `RetryableError` (with its cause and
the server's `Retry-After`). It also says which retry causes mean the endpoint is down, not just busy, and
which mean it has too much to do (`pool.py` acts on both).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from bft.generation.errors import EndpointError, EndpointFailure, RequestRejected, RetryableError
from bft.generation.reasons import INPUT_INVALID, INPUT_TOO_LONG

FATAL_STATUS = {401, 403, 404, 405}
# Retry causes that say the endpoint itself is down (not busy): enough in a row take it out of rotation.
DOWN_CAUSES = {"connection", "timeout", "http_502", "http_503", "http_504", "engine_dead"}
OVERLOAD_CAUSES = {"overloaded", "http_503"}  # the server says it has too much: the endpoint's limit backs off
# vLLM's answer once its engine process has died (`vllm/v1/engine/exceptions.py` EngineDeadError, sent as a
# 500 or as a stream's error event by `vllm/entrypoints/openai/handlers/vllm_error.py`); the API server
# then shuts down unless VLLM_KEEP_ALIVE_ON_ENGINE_DEATH is set
ENGINE_DEAD_RE = re.compile(r"EngineCore encountered an issue|EngineDeadError|Engine loop is not running", re.I)
# How TGI, vLLM and SGLang word "prompt + max tokens exceed the model's limit".
TOO_LONG_RE = re.compile(
    r"context|too long|max(imum)?[_ ]?(total|input|model)?[_ ]?(tokens|length)|must have less than"
    r"|tokens.{0,40}must be <=",
    re.I,
)
# A request body the server's schema refused (vLLM's FastAPI/pydantic: "2 validation errors: {'type': ...,
# 'loc': 'body.stop', ..., 'ctx': {'max_length': 4}}"): a bad parameter, never a prompt too long, even where
# its words ("max_length") look like one (vLLM's context refusals come from its renderer, `renderers/params.py`)
VALIDATION_RE = re.compile(r"\b\d+ validation errors?\b|'loc': \(?'body", re.I)


def error_message(body: str) -> tuple[str, str | None]:
    """The message and the blamed parameter of an error body: TGI `{"error": "..."}`, vLLM
    `{"error": {"message", "type", "param", "code"}}`, SGLang/old vLLM `{"object": "error", "message"}`."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:300], None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or body)[:600], error.get("param")
        if isinstance(error, str):
            return error[:600], None
        if isinstance(data.get("message"), str):
            return data["message"][:600], data.get("param")
    return body.strip()[:300], None


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The seconds a `Retry-After` header asks to wait, or None (no header, or an HTTP date: the backoff
    decides)."""
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def status_error(status: int, body: str, url: str, headers: Mapping[str, str] | None = None) -> EndpointFailure:
    """bft's error for a non-200 answer of `url` (the redacted URL and route, for the message)."""
    detail, parameter = error_message(body)
    if status in FATAL_STATUS:
        return EndpointError(f"{url} answered HTTP {status}: {detail or 'no detail'}")
    if status in (400, 413, 422):
        worded_long = TOO_LONG_RE.search(detail) and not VALIDATION_RE.search(detail)
        too_long = status == 413 or worded_long or parameter in ("input_tokens", "input_text")
        return RequestRejected(INPUT_TOO_LONG if too_long else INPUT_INVALID, f"HTTP {status}: {detail}", parameter)
    if status == 429:
        return RetryableError("overloaded", detail, retry_after(headers))
    if status == 500 and ENGINE_DEAD_RE.search(detail):
        return RetryableError("engine_dead", f"{url}: {detail}")
    return RetryableError(f"http_{status}", detail, retry_after(headers))
