"""One inference endpoint: TGI, vLLM, SGLang or `transformers serve`, spoken to over HTTP.

Chat requests go through `huggingface_hub.AsyncInferenceClient.chat_completion`
(`/v1/chat/completions`, which every one of those servers serves). Raw requests go to TGI's
`/generate` (through `AsyncInferenceClient.text_generation`) or, on OpenAI-compatible servers, to
`/v1/completions` (the Hub client has no method for it, so bft posts with the same HTTP stack).

`probe()` finds out which kind of server it is (`GET /info` answers on TGI only) and which model and
revision it serves, for provenance.

Failures are sorted into three kinds the engine acts on:
`RetryableError` (429, 5xx, timeouts, dropped connections), `RequestRejected` (the server refused this
particular input, e.g. 422 for a prompt longer than the context: rejecting the document is right,
retrying is not) and `EndpointError` (401/403/404: no request to this endpoint can succeed).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx2
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, TextGenerationError

from bft.generation.config import SamplingConfig
from bft.generation.errors import EndpointError
from bft.generation.records import Generation, TokenChoice

FATAL_STATUS = {401, 403, 404, 405}
# Retry causes that say the endpoint itself is down (not busy): enough in a row take it out of rotation.
DOWN_CAUSES = {"connection", "timeout", "http_502", "http_503", "http_504"}
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

    def __init__(self, cause: str, detail: str = ""):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause


class RequestRejected(Exception):
    """The server refused this input; the document is rejected with `reason`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def normalize_finish_reason(reason: str | None) -> str | None:
    if reason in ("length", "max_tokens"):
        return "length"
    if reason in ("stop", "eos_token", "stop_sequence", "eos"):
        return "stop"
    return reason


def _status_error(status: int, body: str, url: str) -> Exception:
    detail = body.strip()[:300]
    if status in FATAL_STATUS:
        return EndpointError(f"{url} answered HTTP {status}: {detail or 'no detail'}")
    if status in (400, 413, 422):
        reason = "input_too_long" if status == 413 or TOO_LONG_RE.search(detail) else "input_invalid"
        return RequestRejected(reason, f"HTTP {status}: {detail}")
    if status == 429:
        return RetryableError("overloaded", detail)
    return RetryableError(f"http_{status}", detail)


class Endpoint:
    """A client for one server URL, shared by all requests a stage sends there."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0, api: str = "auto"):
        self.url = url.rstrip("/")
        self.name = redact_url(self.url)  # what messages show: never credentials
        self.token = token
        self.timeout = timeout
        self.api = api  # auto | tgi | openai
        self.model_id: str | None = None
        self.model_revision: str | None = None
        self.max_concurrent_requests: int | None = None
        self.max_input_tokens: int | None = None
        self.max_total_tokens: int | None = None
        self._chat = AsyncInferenceClient(base_url=self.url, token=token, timeout=timeout)
        self._tgi = AsyncInferenceClient(token=token, timeout=timeout)
        self._http: httpx2.AsyncClient | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"Endpoint({self.name!r}, api={self.api!r}, model={self.model_id!r})"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def http(self) -> httpx2.AsyncClient:
        if self._http is None:
            limits = httpx2.Limits(max_connections=None, max_keepalive_connections=64)
            self._http = httpx2.AsyncClient(timeout=self.timeout, headers=self.headers, limits=limits)
        return self._http

    async def close(self) -> None:
        await self._chat.close()
        await self._tgi.close()
        if self._http is not None:
            await self._http.aclose()

    async def probe(self) -> None:
        """Learn the server kind and its model (TGI `/info`, else OpenAI `/v1/models`)."""
        client = await self.http()
        try:
            if self.api in ("auto", "tgi"):
                response = await client.get(self.url + "/info", timeout=30)
                if response.status_code in (401, 403):
                    raise _status_error(response.status_code, response.text, self.name + "/info")
                if response.status_code == 200 and "model_id" in _json_or_empty(response):
                    info = response.json()
                    self.api = "tgi"
                    self.model_id = info.get("model_id")
                    self.model_revision = info.get("model_sha")
                    self.max_concurrent_requests = info.get("max_concurrent_requests")
                    self.max_input_tokens = info.get("max_input_tokens")
                    self.max_total_tokens = info.get("max_total_tokens")
                    return
            response = await client.get(self.url + "/v1/models", timeout=30)
            if response.status_code in (401, 403):
                raise _status_error(response.status_code, response.text, self.name + "/v1/models")
            self.api = "openai"
            models = _json_or_empty(response).get("data") or []
            if models and isinstance(models[0], dict):
                self.model_id = models[0].get("id")
        except httpx2.TransportError as error:
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

    async def healthy(self) -> bool:
        """Whether the server answers its health route now (TGI `/health`, else `/v1/models`)."""
        client = await self.http()
        route = "/health" if self.api == "tgi" else "/v1/models"
        try:
            response = await client.get(self.url + route, timeout=min(10.0, self.timeout))
        except httpx2.HTTPError:
            return False
        return response.status_code == 200

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
        try:
            output = await self._chat.chat_completion(
                [*messages, {"role": "user", "content": message}],
                model=model or self.model_id or "tgi",
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop=sampling.stop or None,
                seed=sampling.seed,
                logprobs=True if top_n else None,
                top_logprobs=top_n or None,
            )
        except Exception as error:
            raise self._classify(error) from None
        try:
            choice = output.choices[0]
            usage = output.usage
            logprobs = getattr(choice, "logprobs", None)
            choices = None
            if top_n and logprobs is not None and logprobs.content:
                choices = [
                    TokenChoice(item.token, [(t.token, t.logprob) for t in item.top_logprobs or []])
                    for item in logprobs.content
                ]
            return Generation(
                text=choice.message.content or "",
                finish_reason=normalize_finish_reason(choice.finish_reason),
                prompt_tokens=getattr(usage, "prompt_tokens", None),
                completion_tokens=getattr(usage, "completion_tokens", None),
                model=getattr(output, "model", None),
                token_choices=choices,
            )
        except (AttributeError, IndexError, TypeError) as error:
            raise RetryableError("malformed_response", str(error)) from None

    async def complete(
        self, prompt: str, model: str | None, sampling: SamplingConfig, top_n: int | None = None
    ) -> Generation:
        """Send a raw prompt: TGI `/generate`, or `/v1/completions` on OpenAI-compatible servers."""
        if self.api == "tgi":
            return await self._generate(prompt, sampling, top_n)
        payload: dict[str, Any] = {
            "model": model or self.model_id or "default",
            "prompt": prompt,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.stop:
            payload["stop"] = sampling.stop
        if sampling.seed is not None:
            payload["seed"] = sampling.seed
        if top_n:
            payload["logprobs"] = top_n
        client = await self.http()
        try:
            response = await client.post(self.url + "/v1/completions", json=payload)
        except httpx2.TimeoutException:
            raise RetryableError("timeout", self.name) from None
        except httpx2.TransportError as error:
            raise RetryableError("connection", str(error) or type(error).__name__) from None
        if response.status_code != 200:
            raise _status_error(response.status_code, response.text, self.name + "/v1/completions")
        try:
            body = response.json()
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return Generation(
                text=choice.get("text") or "",
                finish_reason=normalize_finish_reason(choice.get("finish_reason")),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                model=body.get("model"),
                token_choices=_completion_choices(choice.get("logprobs")) if top_n else None,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise RetryableError("malformed_response", repr(error)) from None

    async def _generate(self, prompt: str, sampling: SamplingConfig, top_n: int | None) -> Generation:
        try:
            output = await self._tgi.text_generation(
                prompt,
                model=self.url + "/generate",
                details=True,
                do_sample=sampling.temperature > 0,
                max_new_tokens=sampling.max_tokens,
                temperature=sampling.temperature if sampling.temperature > 0 else None,
                top_p=sampling.top_p if sampling.top_p < 1 else None,
                stop=sampling.stop or None,
                seed=sampling.seed,
                top_n_tokens=top_n or None,
            )
        except Exception as error:
            raise self._classify(error) from None
        try:
            details = output.details
            choices = None
            if top_n and details is not None and details.top_tokens and details.tokens:
                # the Hub client parses `tokens` into objects but leaves the nested `top_tokens` as dicts
                choices = [
                    TokenChoice(
                        _field(token, "text"),
                        [(_field(t, "text"), _field(t, "logprob")) for t in top if _field(t, "logprob") is not None],
                    )
                    for token, top in zip(details.tokens, details.top_tokens, strict=False)
                ]
            return Generation(
                text=output.generated_text,
                finish_reason=normalize_finish_reason(details.finish_reason if details else None),
                prompt_tokens=len(details.prefill) if details and details.prefill else None,
                completion_tokens=details.generated_tokens if details else None,
                model=self.model_id,
                token_choices=choices,
            )
        except AttributeError as error:
            raise RetryableError("malformed_response", str(error)) from None

    def _classify(self, error: Exception) -> Exception:
        """Map the Hub client's exceptions onto bft's three kinds of failure."""
        if isinstance(error, (RetryableError, RequestRejected, EndpointError)):
            return error
        if isinstance(error, (InferenceTimeoutError, httpx2.TimeoutException, TimeoutError)):
            return RetryableError("timeout", self.name)
        if isinstance(error, httpx2.TransportError):
            return RetryableError("connection", str(error) or type(error).__name__)
        http_error = error if isinstance(error, HfHubHTTPError) else error.__cause__
        if isinstance(http_error, HfHubHTTPError) and http_error.response is not None:
            return _status_error(http_error.response.status_code, http_error.response.text, self.name)
        if isinstance(error, TextGenerationError):
            return RetryableError("generation_error", str(error))
        if isinstance(error, (json.JSONDecodeError, ValueError, KeyError, TypeError)):
            return RetryableError("malformed_response", f"{type(error).__name__}: {error}")
        return RetryableError("unexpected", f"{type(error).__name__}: {error}")


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name)


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


def _json_or_empty(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
