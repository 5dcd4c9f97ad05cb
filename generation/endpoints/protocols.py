"""The protocols' bodies: requests built and replies read for TGI `/generate`, OpenAI chat and completions.

Three codecs, each a request builder and a reply reader, and the two documents a server describes itself
with. Nothing here sends anything (`transport.py` does); `client.Endpoint` chooses the codec and makes the
reply a `Generation`.

- TGI `POST /generate` (GenerateRequest -> GenerateResponse with `details`): `generate_request`,
  `read_generate`; TGI's `GET /info`: `read_tgi_info`;
- OpenAI `POST /v1/chat/completions` (served by vLLM, SGLang, TGI, `transformers serve`, hosted APIs):
  `chat_request`, `read_chat`. Reasoning models' reasoning (`reasoning` / `reasoning_content` fields) is
  kept apart from the answer, so it is never parsed;
- OpenAI `POST /v1/completions` (raw prompts on OpenAI-compatible servers): `completion_request`,
  `read_completion`; `GET /v1/models`: `read_model_list` (vLLM and SGLang name themselves in `owned_by`
  and give `max_model_len`).

The OpenAI requests stream their replies (`stream: true` with `stream_options.include_usage`) when asked;
`streams.py` gathers the chunks into the body read here. A body not in its protocol's shape is a
`RetryableError("malformed_response")`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.streams import STREAM_OPTIONS
from bft.generation.errors import RetryableError
from bft.generation.records import TokenChoice

FAILED_FINISH = {"abort", "error"}  # vLLM / SGLang: the generation was cut off by the server


def normalize_finish_reason(reason: str | None) -> str | None:
    """bft's finish reason ("stop", "length") for each server's word for it; others pass as they are."""
    if reason in ("length", "max_tokens"):
        return "length"
    if reason in ("stop", "eos_token", "stop_sequence", "eos"):
        return "stop"
    return reason


@dataclass
class ServedReply:
    """A reply as its protocol carries it, before `client.Endpoint` checks it and makes it a `Generation`."""

    text: str
    finish_reason: str | None  # the server's own word (`normalize_finish_reason` gives bft's)
    usage: dict[str, Any]  # `prompt_tokens`, `completion_tokens`, `completion_tokens_details`, when said
    model: str | None = None  # the model the body names, if it does
    token_choices: list[TokenChoice] | None = None
    reasoning: str | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.text, str)
            or not isinstance(self.usage, dict)
            or not isinstance(self.finish_reason, str | None)
        ):
            raise TypeError(
                f"text {type(self.text).__name__}, usage {type(self.usage).__name__} and finish_reason "
                f"{type(self.finish_reason).__name__}"
            )


@dataclass(frozen=True)
class ServedModel:
    """What a server says of itself and the model it serves (for provenance and the request budget)."""

    server_kind: str  # tgi | vllm | sglang | openai
    model_id: str | None = None
    model_revision: str | None = None
    model_root: str | None = None  # vLLM, SGLang: the path or Hub id `--model` was given (`id` may alias it)
    max_concurrent_requests: int | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None  # the model's context length, where the server says it
    max_stop_sequences: int | None = None  # TGI's `/info`; vLLM's default (`VLLM_MAX_STOP_STRINGS`)


# vLLM refuses a request with more stop strings than `VLLM_MAX_STOP_STRINGS` (default 4: `vllm/envs.py`; the
# limit is a `max_length` on the `stop` field, `vllm/entrypoints/generate/base/protocol.py` StopParam) and does
# not say its value; bft sends it at most that many and watches for the others itself.
VLLM_MAX_STOP_STRINGS = 4


@contextmanager
def _reading(*also: type[Exception]) -> Iterator[None]:
    """A body not in the protocol's shape (a missing key, a wrong type) is a malformed response: retried."""
    try:
        yield
    except (KeyError, IndexError, TypeError, AttributeError, *also) as error:
        raise RetryableError("malformed_response", repr(error)) from None


def _streaming(stream: bool) -> dict[str, Any]:
    """The fields that ask an OpenAI route to stream its reply with the token counts at the end."""
    return {"stream": True, "stream_options": dict(STREAM_OPTIONS)} if stream else {}


def _openai_sampling(sampling: SamplingConfig, with_top_p: bool) -> dict[str, Any]:
    """The decoding fields of an OpenAI chat or completion request."""
    fields: dict[str, Any] = {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature}
    if with_top_p:
        fields["top_p"] = sampling.top_p
    if sampling.stop:
        fields["stop"] = sampling.stop
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    return fields


# -- OpenAI chat: POST /v1/chat/completions ---------------------------------------------------------------


def chat_request(
    message: str,
    system: str | None,
    model: str,
    sampling: SamplingConfig,
    top_n: int | None,
    tgi: bool,
    stream: bool,
) -> dict[str, Any]:
    """`message` as the user turn (after a `system` message if given); `top_n` asks for token alternatives."""
    messages = [{"role": "system", "content": system}] if system else []
    payload: dict[str, Any] = {
        "model": model,
        "messages": [*messages, {"role": "user", "content": message}],
        # TGI refuses top_p 1.0 on chat (it must be < 1); 1.0 is its default, so it is left out there
        **_openai_sampling(sampling, with_top_p=sampling.top_p < 1 or not tgi),
    }
    if top_n:
        payload["logprobs"], payload["top_logprobs"] = True, top_n
    return payload | _streaming(stream)


def read_chat(body: dict[str, Any], top_n: int | None) -> ServedReply:
    with _reading():
        choice = body["choices"][0]
        message = choice.get("message") or {}
        logprobs = choice.get("logprobs") or {}
        choices = None
        if top_n and logprobs.get("content"):
            choices = [
                TokenChoice(item["token"], [(t["token"], t["logprob"]) for t in item.get("top_logprobs") or []])
                for item in logprobs["content"]
            ]
        return ServedReply(
            message.get("content") or "",
            choice.get("finish_reason"),
            body.get("usage") or {},
            body.get("model"),
            choices,
            message.get("reasoning") or message.get("reasoning_content"),
        )


# -- OpenAI completions: POST /v1/completions -------------------------------------------------------------


def completion_request(
    prompt: str, model: str, sampling: SamplingConfig, top_n: int | None, stream: bool
) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "prompt": prompt, **_openai_sampling(sampling, with_top_p=True)}
    if top_n:
        payload["logprobs"] = top_n
    return payload | _streaming(stream)


def read_completion(body: dict[str, Any], top_n: int | None) -> ServedReply:
    with _reading():
        choice = body["choices"][0]
        choices = _completion_choices(choice.get("logprobs")) if top_n else None
        return ServedReply(
            choice.get("text") or "", choice.get("finish_reason"), body.get("usage") or {}, body.get("model"), choices
        )


def _completion_choices(logprobs: Any) -> list[TokenChoice] | None:
    """Token alternatives from an OpenAI `/v1/completions` choice (vLLM's shape; TGI sends none)."""
    if not isinstance(logprobs, dict):
        return None
    tokens, tops = logprobs.get("tokens"), logprobs.get("top_logprobs")
    if not isinstance(tokens, list) or not isinstance(tops, list):
        return None
    return [
        TokenChoice(str(token), [(str(t), float(p)) for t, p in (top or {}).items()])
        for token, top in zip(tokens, tops, strict=False)
    ]


def read_model_list(body: dict[str, Any]) -> ServedModel:
    """The server and model an OpenAI `GET /v1/models` names (the first model listed)."""
    models = body.get("data") or []
    if not (models and isinstance(models[0], dict)):
        return ServedModel("openai")
    first = models[0]
    root, owner, limit = first.get("root"), first.get("owned_by"), first.get("max_model_len")
    return ServedModel(
        server_kind=owner if owner in ("vllm", "sglang") else "openai",  # vLLM and SGLang name themselves here
        model_id=first.get("id"),
        model_root=root if isinstance(root, str) else None,
        max_total_tokens=limit if isinstance(limit, int) and limit > 0 else None,  # vLLM, SGLang
        max_stop_sequences=VLLM_MAX_STOP_STRINGS if owner == "vllm" else None,
    )


# -- TGI: POST /generate, GET /info -----------------------------------------------------------------------


def generate_request(prompt: str, sampling: SamplingConfig, top_n: int | None) -> dict[str, Any]:
    parameters: dict[str, Any] = {"details": True, "do_sample": sampling.temperature > 0}
    parameters["max_new_tokens"] = sampling.max_tokens
    if sampling.temperature > 0:
        parameters["temperature"] = sampling.temperature
    if sampling.top_p < 1:
        parameters["top_p"] = sampling.top_p
    if sampling.stop:
        parameters["stop"] = sampling.stop
    if sampling.seed is not None:
        parameters["seed"] = sampling.seed
    if top_n:
        parameters["top_n_tokens"] = top_n
    return {"inputs": prompt, "parameters": parameters}


def read_generate(body: dict[str, Any], headers: Any, top_n: int | None) -> ServedReply:
    """TGI's GenerateResponse; it names no model (the endpoint's `/info` does)."""
    with _reading(ValueError):
        details = body.get("details") or {}
        choices = None
        if top_n and details.get("top_tokens") and details.get("tokens"):
            choices = [
                TokenChoice(token["text"], [(t["text"], t["logprob"]) for t in top if t.get("logprob") is not None])
                for token, top in zip(details["tokens"], details["top_tokens"], strict=False)
            ]
        # real TGI leaves `prefill` empty unless asked for every prompt token; it says the count in a header
        header = headers.get("x-prompt-tokens")
        usage = {
            "prompt_tokens": int(header) if header and header.isdigit() else len(details.get("prefill") or []) or None,
            "completion_tokens": details.get("generated_tokens"),
        }
        return ServedReply(body["generated_text"], details.get("finish_reason"), usage, None, choices)


def read_tgi_info(info: dict[str, Any]) -> ServedModel | None:
    """The model and limits TGI's `GET /info` gives, or None when the body is not TGI's (no `model_id`)."""
    if "model_id" not in info:
        return None
    return ServedModel(
        server_kind="tgi",
        model_id=info.get("model_id"),
        model_revision=info.get("model_sha"),
        max_concurrent_requests=info.get("max_concurrent_requests"),
        max_input_tokens=info.get("max_input_tokens"),
        max_total_tokens=info.get("max_total_tokens"),
        max_stop_sequences=info.get("max_stop_sequences"),
    )
