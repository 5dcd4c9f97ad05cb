"""A server's failed answer sorted into bft's error family (`errors.py`, `endpoints/failures.py`): the kind
decides what the engine does (retry, cut or reject the document, stop the run), so each must land right."""

import json

import pytest

from bft.generation.endpoints.failures import status_error
from bft.generation.endpoints.protocols import read_chat
from bft.generation.errors import BftError, EndpointError, EndpointFailure, RequestRejected, RetryableError
from bft.generation.reasons import INPUT_INVALID, INPUT_TOO_LONG
from tests.servers.protocol import too_many_stops

URL = "http://127.0.0.1:8000/v1/chat/completions"


def vllm(message: str, param: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": "BadRequestError", "param": param, "code": 400}})


def test_the_family_has_one_base_and_only_the_fatal_kind_is_a_user_error():
    for kind in (EndpointError, RetryableError, RequestRejected):
        assert issubclass(kind, EndpointFailure)
    assert issubclass(EndpointError, BftError)  # the CLI prints it without a traceback
    assert not issubclass(RetryableError, BftError) and not issubclass(RequestRejected, BftError)


@pytest.mark.parametrize("status", [401, 403, 404, 405])
def test_auth_and_missing_routes_stop_the_run(status):
    error = status_error(status, '{"error": "Unauthorized"}', URL)
    assert isinstance(error, EndpointError) and f"HTTP {status}: Unauthorized" in str(error)


def test_a_rate_limit_is_retried_after_the_servers_window():
    error = status_error(429, '{"error": "Model is overloaded"}', URL, {"retry-after": "2.5"})
    assert isinstance(error, RetryableError)
    assert (error.cause, error.detail, error.retry_after) == ("overloaded", "Model is overloaded", 2.5)
    dated = status_error(503, "busy", URL, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})
    assert isinstance(dated, RetryableError) and (dated.cause, dated.retry_after) == ("http_503", None)


def test_a_prompt_over_the_context_is_refused_as_too_long_and_other_refusals_as_invalid():
    too_long = status_error(400, vllm("This model's maximum context length is 8192 tokens", "input_tokens"), URL)
    assert isinstance(too_long, RequestRejected)
    assert (too_long.reason, too_long.parameter) == (INPUT_TOO_LONG, "input_tokens")
    invalid = status_error(400, vllm("`seed` is not supported", "seed"), URL)
    assert isinstance(invalid, RequestRejected)
    assert (invalid.reason, invalid.parameter, invalid.detail) == (
        INPUT_INVALID,
        "seed",
        "HTTP 400: `seed` is not supported",
    )


def test_a_schema_refusal_worded_with_max_length_is_invalid_not_too_long():
    """vLLM 0.32 refuses a fifth stop string through pydantic, whose words hold "max_length" (seen on the real
    server); read as too long, every document was rejected as one that cannot be cut to fit."""
    _, body = too_many_stops("vllm", 5)
    refused = status_error(400, json.dumps(body), URL)
    assert isinstance(refused, RequestRejected) and refused.reason == INPUT_INVALID
    assert "List should have at most 4 items after validation, not 5" in refused.detail


def test_a_dead_vllm_engine_is_its_own_cause():
    body = json.dumps({"error": {"message": "EngineCore encountered an issue. See stack trace", "code": 500}})
    error = status_error(500, body, URL)
    assert isinstance(error, RetryableError) and error.cause == "engine_dead"
    assert status_error(500, '{"error": "Incomplete generation"}', URL).cause == "http_500"


@pytest.mark.parametrize(
    "choice",
    [
        {"message": {"content": "ok"}, "finish_reason": ["stop"]},  # not a word: a broken server, not a crash
        {"message": {"content": "ok"}, "finish_reason": {"type": "stop"}},
        {"message": {"content": ["o", "k"]}, "finish_reason": "stop"},
    ],
)
def test_a_malformed_reply_body_is_retried_never_raised_as_a_crash(choice):
    with pytest.raises(RetryableError) as caught:
        read_chat({"choices": [choice], "usage": {}}, top_n=None)
    assert caught.value.cause == "malformed_response"
