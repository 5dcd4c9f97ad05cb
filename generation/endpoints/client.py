"""One inference endpoint: vLLM, SGLang, TGI, `transformers serve` or a hosted OpenAI-compatible API, over HTTP.

bft speaks to every server with its own HTTP client (`aiohttp`, declared in setup.cfg):
`huggingface_hub`'s inference client refuses every URL under `HF_HUB_OFFLINE=1`, which offline clusters
set, and caps its connection pool below bft's own limits. The Hub flag keeps governing Hub access only.
aiohttp's connection pool hands out an idle connection in constant time; httpx's scans every pooled
connection per request, which cost about 2 ms a request at 128 connections (measured with cProfile).

- chat: `POST /v1/chat/completions` (every one of those servers serves it);
- raw prompts: TGI's `POST /generate`, or `POST /v1/completions` on OpenAI-compatible servers;
- `probe()` finds out which kind of server it is (`GET /info` answers on TGI only), which model and
  revision it serves (for provenance) and its context length where it says it (TGI `/info`
  `max_total_tokens`; vLLM and SGLang `/v1/models` `max_model_len`).

The OpenAI routes stream their replies (`stream: true` with `stream_options.include_usage`) and
`streams.py` gathers the chunks into the reply the server would have sent whole, so a reply's progress is
heard token by token: a request is abandoned only after `timeout` seconds in which neither it nor any
other generation request to the endpoint heard anything (`silence.py`), never for its length. vLLM and
SGLang count a prompt's tokens at `/tokenize` (`count_tokens`), so a long prompt is budgeted before it is
sent; a reply vLLM ended early because it lowered `max_tokens` to the room the prompt left is refused as
too long, not kept (`_check_room`).

A base URL may be written with or without `/v1` and a trailing slash (`http://host:8000/v1`, as vLLM and
the OpenAI SDK write it), or with a route bft adds itself (`.../v1/chat/completions`, `.../generate`).
Replies are normalized into `Generation`: reasoning models' reasoning (`reasoning` / `reasoning_content`
fields) is kept apart from the answer (the stages also take inline `<think>...</think>` apart,
`method/stages.py`), so it is never parsed; `abort` / `error` finish reasons are failures, never complete
replies.

Failures are sorted into three kinds the engine acts on:
`RetryableError` (429, 5xx, timeouts, dropped connections, streams cut short, aborted generations, a vLLM
engine that died (`engine_dead`); with the server's `Retry-After` when it sends one), `RequestRejected` (the server refused this particular input, e.g. a
prompt longer than the context: rejecting or cutting the document is right, retrying is not) and
`EndpointError` (401/403/404: no request to this endpoint can succeed).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.limiter import ServerLoad, parse_load
from bft.generation.endpoints.silence import Silence
from bft.generation.endpoints.streams import STREAM_OPTIONS, Gathered, MalformedStream, StreamError
from bft.generation.errors import EndpointError
from bft.generation.reasons import INPUT_INVALID, INPUT_TOO_LONG
from bft.generation.records import Generation, TokenChoice

FATAL_STATUS = {401, 403, 404, 405}
# Retry causes that say the endpoint itself is down (not busy): enough in a row take it out of rotation.
DOWN_CAUSES = {"connection", "timeout", "http_502", "http_503", "http_504", "engine_dead"}
# vLLM's answer once its engine process has died (`vllm/v1/engine/exceptions.py` EngineDeadError, sent as a
# 500 or as a stream's error event by `vllm/entrypoints/openai/handlers/vllm_error.py`); the API server
# then shuts down unless VLLM_KEEP_ALIVE_ON_ENGINE_DEATH is set
ENGINE_DEAD_RE = re.compile(r"EngineCore encountered an issue|EngineDeadError|Engine loop is not running", re.I)
# Token-count margin for a chat template's own tokens (roles, a default system prompt): below bytes + this,
# a prompt surely fits and is not counted at the server (every token of a byte-level vocabulary is >= 1 byte)
TEMPLATE_TOKENS = 256
OVERLOAD_CAUSES = {"overloaded", "http_503"}  # the server says it has too much: the endpoint's limit backs off
# How TGI, vLLM and SGLang word "prompt + max tokens exceed the model's limit".
TOO_LONG_RE = re.compile(
    r"context|too long|max(imum)?[_ ]?(total|input|model)?[_ ]?(tokens|length)|must have less than"
    r"|tokens.{0,40}must be <=",
    re.I,
)


def redact_url(url: str) -> str:
    """`url` without user:password and with query values hidden, for logs and files."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class RetryableError(Exception):
    """A failure that another attempt may not meet (overload, server error, network)."""

    def __init__(self, cause: str, detail: str = "", retry_after: float | None = None):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.retry_after = retry_after  # seconds the server asked to wait (`Retry-After`), if it said


class RequestRejected(Exception):
    """The server refused this input; the document is rejected with `reason`.

    `parameter` names the request field the server blamed, when it said (vLLM's `param`).
    """

    def __init__(self, reason: str, detail: str = "", parameter: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.parameter = parameter


def normalize_finish_reason(reason: str | None) -> str | None:
    if reason in ("length", "max_tokens"):
        return "length"
    if reason in ("stop", "eos_token", "stop_sequence", "eos"):
        return "stop"
    return reason


FAILED_FINISH = {"abort", "error"}  # vLLM / SGLang: the generation was cut off by the server


# Routes bft adds itself: a URL given with one (`http://host:8000/v1/chat/completions`) means its server.
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1", "/generate_stream", "/generate", "/info")


def base_url(url: str) -> str:
    """The server's root: `url` without a trailing slash or a trailing route of `ROUTES` (bft adds the routes)."""
    url = url.rstrip("/")
    route = next((route for route in ROUTES if url.endswith(route)), "")
    return url[: len(url) - len(route)]


def _error_message(body: str) -> tuple[str, str | None]:
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


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


def _status_error(status: int, body: str, url: str, headers=None) -> Exception:
    detail, parameter = _error_message(body)
    if status in FATAL_STATUS:
        return EndpointError(f"{url} answered HTTP {status}: {detail or 'no detail'}")
    if status in (400, 413, 422):
        too_long = status == 413 or TOO_LONG_RE.search(detail) or parameter in ("input_tokens", "input_text")
        return RequestRejected(INPUT_TOO_LONG if too_long else INPUT_INVALID, f"HTTP {status}: {detail}", parameter)
    if status == 429:
        return RetryableError("overloaded", detail, _retry_after(headers))
    if status == 500 and ENGINE_DEAD_RE.search(detail):
        return RetryableError("engine_dead", f"{url}: {detail}")
    return RetryableError(f"http_{status}", detail, _retry_after(headers))


class Endpoint:
    """A client for one server URL, shared by all requests the stages send there."""

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 300.0, api: str = "auto", stream: bool = True
    ):
        self.url = base_url(url)
        self.name = redact_url(self.url)  # what messages show: never credentials
        self.token = token
        self.timeout = timeout  # seconds of silence a request bears (`silence.py`), not its length
        self.silence = Silence(timeout)
        self.stream = stream  # OpenAI routes stream their replies (SSE), so progress is heard token by token
        self.tokenize_route = False  # the server counts prompt tokens at /tokenize (vLLM, SGLang)
        self.version: str | None = None  # the server's own version, where it says (vLLM `/version`)
        self.api = api  # auto | tgi | openai
        self.model_id: str | None = None
        self.model_revision: str | None = None
        self.model_root: str | None = None  # vLLM, SGLang: the path or Hub id `--model` was given (`id` may alias it)
        self.max_concurrent_requests: int | None = None
        self.max_input_tokens: int | None = None
        self.max_total_tokens: int | None = None  # the model's context length, where the server says it
        self.max_stop_sequences: int | None = None
        self.server_kind: str | None = None  # tgi | vllm | sglang | openai, for provenance
        self.connections = 0  # requests in flight bft allows here, over all stages (`reserve`)
        self.limiter = None  # its AdaptiveLimit, shared by the stages (`run/wiring.open_pools`)
        self._http: aiohttp.ClientSession | None = None
        self._pool_size = 0  # the connections the open session was made for

    def __repr__(self) -> str:  # never shows the token
        return f"Endpoint({self.name!r}, api={self.api!r}, model={self.model_id!r})"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def reserve(self, in_flight: int) -> None:
        """Say that a stage may have `in_flight` requests here at once: the connection pool holds them all."""
        self.connections += in_flight

    async def http(self) -> aiohttp.ClientSession:
        """The HTTP session, with as many connections as bft's own limits allow requests in flight."""
        size = max(self.connections, 1)
        if self._http is not None and self._pool_size != size:  # a stage reserved more since it was made
            old, self._http = self._http, None  # (before the await: a request arriving meanwhile opens the new one)
            await old.close()
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=size, limit_per_host=size, ttl_dns_cache=300)
            # no deadline on a reply's length: its silence is watched instead (`_exchange`); connecting may
            # take at most the same time (a host that never answers)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
            self._http = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers)
            self._pool_size = size
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _get(self, route: str, timeout: float) -> _Response:
        session = await self.http()
        async with session.get(self.url + route, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return _Response(response.status, await response.text(errors="replace"), response.headers)

    async def probe(self) -> None:
        """Learn the server kind, its model and its limits (TGI `/info`, else OpenAI `/v1/models`)."""
        try:
            if self.api in ("auto", "tgi"):
                response = await self._get("/info", 30)
                if response.status_code in (401, 403):
                    raise _status_error(response.status_code, response.text, self.name + "/info")
                if response.status_code == 200 and "model_id" in _json_or_empty(response):
                    info = response.json()
                    self.api = self.server_kind = "tgi"
                    self.model_id = info.get("model_id")
                    self.model_revision = info.get("model_sha")
                    self.max_concurrent_requests = info.get("max_concurrent_requests")
                    self.max_input_tokens = info.get("max_input_tokens")
                    self.max_total_tokens = info.get("max_total_tokens")
                    self.max_stop_sequences = info.get("max_stop_sequences")
                    return
            response = await self._get("/v1/models", 30)
            if response.status_code in (401, 403):
                raise _status_error(response.status_code, response.text, self.name + "/v1/models")
            if response.status_code != 200:
                raise EndpointError(
                    f"endpoint {self.name} answered HTTP {response.status_code} at /v1/models: it is neither TGI "
                    "nor an OpenAI-compatible server there (check the URL)"
                )
            self.api = "openai"
            models = _json_or_empty(response).get("data") or []
            self.server_kind = "openai"
            if models and isinstance(models[0], dict):
                self.model_id = models[0].get("id")
                root = models[0].get("root")
                self.model_root = root if isinstance(root, str) else None
                owner = models[0].get("owned_by")  # vLLM and SGLang name themselves here
                self.server_kind = owner if owner in ("vllm", "sglang") else "openai"
                limit = models[0].get("max_model_len")  # vLLM, SGLang
                self.max_total_tokens = limit if isinstance(limit, int) and limit > 0 else None
            # both count a prompt's tokens for it (vLLM `serve/tokenize/protocol.py`, SGLang `/tokenize`)
            self.tokenize_route = self.server_kind in ("vllm", "sglang")
            if self.server_kind == "vllm":  # `{"version": "0.32.0"}` (vLLM `serve/instrumentator/basic.py`)
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):  # a fact for provenance, not a need
                    response = await self._get("/version", 10)
                    if response.status_code == 200:
                        self.version = _json_or_empty(response).get("version")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise EndpointError(f"endpoint {self.name} is unreachable: {error or type(error).__name__}") from None

    def require_model(self, model: str | None, where: str) -> None:
        """Refuse to send requests without a model name when the server lists none (`transformers serve PATH`).

        Such a server answers `"model": "default"` with an error for every request; one message up front
        says what to do instead.
        """
        if self.api == "openai" and not self.model_id and not model:
            raise EndpointError(
                f"endpoint {self.name} lists no model at /v1/models and {where} names none: "
                "pass --model NAME (`bft serve` prints the name)"
            )

    async def server_load(self) -> ServerLoad | None:
        """The server's own load from its Prometheus `/metrics` (vLLM, SGLang, TGI), or None."""
        try:
            response = await self._get("/metrics", 5.0)
        except (aiohttp.ClientError, TimeoutError):
            return None
        if response.status_code != 200:
            return None
        return parse_load(response.text, time.monotonic())

    async def count_tokens(self, text: str, mode: str, model: str | None) -> int | None:
        """The prompt's tokens as the server counts them (`POST /tokenize`: vLLM, SGLang), the chat template
        included for a chat turn; None where the server cannot say (then it is not asked again)."""
        if not self.tokenize_route:
            return None
        payload: dict[str, Any] = {"model": model or self.model_id}
        if mode == "chat":
            payload |= {"messages": [{"role": "user", "content": text}], "add_generation_prompt": True}
        else:
            payload |= {"prompt": text, "add_special_tokens": True}
        try:
            body = await self._post("/tokenize", payload, generation=False)
        except (RequestRejected, EndpointError):  # no such route here, or it refuses the form: not asked again
            self.tokenize_route = False
            return None
        except RetryableError:  # a busy or failing server: the request itself will meet it
            return None
        count = body.get("count")
        return count if isinstance(count, int) else None

    def surely_fits(self, text: str, budget: int) -> bool:
        """Whether a prompt fits `budget` tokens whatever the tokenizer: no token is shorter than a byte."""
        return len(text.encode("utf-8")) + TEMPLATE_TOKENS <= budget

    async def healthy(self) -> bool:
        """Whether the server answers its health route now (`/health` on TGI, vLLM and SGLang, which answer
        503 once their engine has died; else `/v1/models`)."""
        route = "/health" if self.api == "tgi" or self.server_kind in ("vllm", "sglang") else "/v1/models"
        try:
            response = await self._get(route, min(10.0, self.timeout))
            if response.status_code == 404 and route == "/health":  # behind a gateway that forwards /v1 only
                response = await self._get("/v1/models", min(10.0, self.timeout))
        except (aiohttp.ClientError, TimeoutError):
            return False
        return response.status_code == 200

    async def _post(self, route: str, payload: dict[str, Any], generation: bool = True) -> dict[str, Any]:
        body, _ = await self._exchange(route, payload, generation)
        return body

    async def _exchange(
        self, route: str, payload: dict[str, Any], generation: bool = True
    ) -> tuple[dict[str, Any], Any]:
        """POST `payload` to `route`: the JSON object answered (a streamed reply gathered into the same
        shape, `streams.py`) and the response headers, or bft's error kind.

        The request is abandoned (`RetryableError("timeout")`) only after `timeout` seconds in which neither
        it nor any other request to this endpoint heard anything (`silence.py`); what a request that is not a
        `generation` hears does not count for the others."""
        session = await self.http()
        try:
            async with (
                self.silence.watch(shared=generation) as watch,
                session.post(self.url + route, json=payload) as response,
            ):
                status, headers = response.status, response.headers
                if status != 200:
                    raw = await response.read()
                    raise _status_error(status, raw.decode("utf-8", "replace"), self.name + route, headers)
                if payload.get("stream") and response.content_type == "text/event-stream":
                    gathered = Gathered(chat=route == "/v1/chat/completions")
                    async for line in response.content:  # to the end of the body, so the connection is reused
                        watch.heard()
                        gathered.add_line(line)
                    return gathered.body(), headers
                raw = await response.read()  # a whole body (TGI /generate, or a server that does not stream)
                watch.heard()
        except TimeoutError as error:
            raise RetryableError("timeout", f"{self.name}: {error}") from None
        except StreamError as error:
            raise _status_error(error.status, error.body, self.name + route) from None
        except (MalformedStream, HttpProcessingError, ValueError) as error:  # a line past aiohttp's limit
            raise RetryableError("malformed_response", f"{self.name}{route}: {error!r}") from None
        except aiohttp.ClientError as error:  # refused, reset, closed mid-reply
            raise RetryableError("connection", str(error) or type(error).__name__) from None
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise RetryableError("malformed_response", repr(error)) from None
        if not isinstance(body, dict):
            raise RetryableError("malformed_response", f"a JSON {type(body).__name__}, not an object")
        return body, headers

    def _streaming(self) -> dict[str, Any]:
        """The fields that ask an OpenAI route to stream its reply with the token counts at the end."""
        return {"stream": True, "stream_options": dict(STREAM_OPTIONS)} if self.stream else {}

    async def chat(
        self,
        message: str,
        model: str | None,
        sampling: SamplingConfig,
        top_n: int | None = None,
        system: str | None = None,
    ) -> Generation:
        """Send `message` as the user turn to `/v1/chat/completions` (after a `system` message if given);
        `top_n` asks for token alternatives."""
        messages = [{"role": "system", "content": system}] if system else []
        payload: dict[str, Any] = {
            "model": model or self.model_id or "tgi",
            "messages": [*messages, {"role": "user", "content": message}],
            # TGI refuses top_p 1.0 on chat (it must be < 1); 1.0 is its default, so it is left out there
            **_openai_sampling(sampling, with_top_p=sampling.top_p < 1 or self.api != "tgi"),
        }
        if top_n:
            payload["logprobs"], payload["top_logprobs"] = True, top_n
        body = await self._post("/v1/chat/completions", payload | self._streaming())
        try:
            choice = body["choices"][0]
            message_out = choice.get("message") or {}
            usage = body.get("usage") or {}
            logprobs = choice.get("logprobs") or {}
            choices = None
            if top_n and logprobs.get("content"):
                choices = [
                    TokenChoice(item["token"], [(t["token"], t["logprob"]) for t in item.get("top_logprobs") or []])
                    for item in logprobs["content"]
                ]
            reasoning = message_out.get("reasoning") or message_out.get("reasoning_content")
            return self._generation(
                message_out.get("content") or "", choice.get("finish_reason"), usage, body, choices, reasoning, sampling
            )
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise RetryableError("malformed_response", repr(error)) from None

    async def complete(
        self, prompt: str, model: str | None, sampling: SamplingConfig, top_n: int | None = None
    ) -> Generation:
        """Send a raw prompt: TGI `/generate`, or `/v1/completions` on OpenAI-compatible servers."""
        if self.api == "tgi":
            return await self._generate(prompt, sampling, top_n)
        payload: dict[str, Any] = {
            "model": model or self.model_id or "default",
            "prompt": prompt,
            **_openai_sampling(sampling, with_top_p=True),
        }
        if top_n:
            payload["logprobs"] = top_n
        body = await self._post("/v1/completions", payload | self._streaming())
        try:
            choice = body["choices"][0]
            choices = _completion_choices(choice.get("logprobs")) if top_n else None
            return self._generation(
                choice.get("text") or "",
                choice.get("finish_reason"),
                body.get("usage") or {},
                body,
                choices,
                None,
                sampling,
            )
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise RetryableError("malformed_response", repr(error)) from None

    async def _generate(self, prompt: str, sampling: SamplingConfig, top_n: int | None) -> Generation:
        """TGI's `/generate` (GenerateRequest -> GenerateResponse with `details`)."""
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
        body, headers = await self._exchange("/generate", {"inputs": prompt, "parameters": parameters})
        try:
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
                "prompt_tokens": int(header)
                if header and header.isdigit()
                else len(details.get("prefill") or []) or None,
                "completion_tokens": details.get("generated_tokens"),
            }
            return self._generation(body["generated_text"], details.get("finish_reason"), usage, {}, choices, None)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise RetryableError("malformed_response", repr(error)) from None

    def _generation(self, text: str, finish, usage: dict, body: dict, choices, reasoning, sampling=None) -> Generation:
        if finish in FAILED_FINISH:
            raise RetryableError(f"finish_{finish}", f"{self.name} ended the generation with finish_reason {finish!r}")
        self._check_room(finish, usage, sampling)
        details = usage.get("completion_tokens_details") or {}
        return Generation(
            text=text,
            finish_reason=normalize_finish_reason(finish),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            model=body.get("model") or (self.model_id if self.api == "tgi" else None),
            token_choices=choices,
            reasoning=reasoning,
            reasoning_tokens=details.get("reasoning_tokens") if isinstance(details, dict) else None,
        )

    def _check_room(self, finish, usage: dict, sampling: SamplingConfig | None) -> None:
        """Refuse a reply the server cut short for lack of room, as if it had refused the prompt.

        vLLM serves a prompt that fits its context but leaves less than `max_tokens` with `max_tokens`
        lowered to what is left (`vllm/entrypoints/serve/utils/api_utils.py`, `get_max_tokens`), and says
        only `finish_reason: length`. Such a reply is not the model's own rambling: it is a prompt too long
        for the stage's settings. Told by the server's own usage: fewer tokens than asked, and prompt plus
        completion filling the context it declared."""
        prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        context = self.max_total_tokens
        if (
            sampling is None
            or normalize_finish_reason(finish) != "length"
            or not isinstance(prompt_tokens, int)
            or not isinstance(completion_tokens, int)
            or context is None
            or completion_tokens >= sampling.max_tokens
            or prompt_tokens + completion_tokens < context
        ):
            return
        raise RequestRejected(
            INPUT_TOO_LONG,
            f"the prompt has {prompt_tokens} tokens and {self.name} leaves {context - sampling.max_tokens} after "
            f"{sampling.max_tokens} max_tokens: it served {completion_tokens} tokens and stopped at its context "
            f"of {context} (finish_reason length; the server lowered max_tokens without a word)",
            "max_tokens",
        )


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


@dataclass
class _Response:
    """A GET's answer, read whole (small JSON bodies: /info, /v1/models, /health)."""

    status_code: int
    text: str
    headers: Any

    def json(self) -> Any:
        return json.loads(self.text)


def _json_or_empty(response: _Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
