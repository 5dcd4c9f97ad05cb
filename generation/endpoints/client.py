"""One inference endpoint: vLLM, SGLang, TGI, `transformers serve` or a hosted OpenAI-compatible API.

`Endpoint` is what the stages, the pool and the commands hold: it learns what its server is and serves
(`probe`), sends chat and raw requests in the server's protocol and returns each reply as a `Generation`,
or one of the errors of `errors.py`. It puts three rooms together, each with one job:

- `transport.py`: HTTP to the server (the connection pool, GETs, POSTs heard to their end, streamed or
  not, and abandoned only on silence);
- `protocols.py`: the bodies: requests built and replies read for TGI `/generate`, OpenAI chat and
  completions, and the server's own description (`/info`, `/v1/models`);
- `failures.py`: a failed answer sorted into `RetryableError`, `RequestRejected` or `EndpointError`.

The routes:

- chat: `POST /v1/chat/completions` (every one of those servers serves it);
- raw prompts: TGI's `POST /generate`, or `POST /v1/completions` on OpenAI-compatible servers;
- `probe()` finds out which kind of server it is (`GET /info` answers on TGI only), which model and
  revision it serves (for provenance) and its context length where it says it (TGI `/info`
  `max_total_tokens`; vLLM and SGLang `/v1/models` `max_model_len`); `healthy()` asks its health route,
  `server_load()` its Prometheus `/metrics`.

vLLM and SGLang count a prompt's tokens at `/tokenize` (`count_tokens`), so a long prompt is budgeted
before it is sent; a reply vLLM ended early because it lowered `max_tokens` to the room the prompt left is
refused as too long, not kept (`_check_room`). `abort` / `error` finish reasons are failures, never
complete replies.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Any

import aiohttp

from bft.generation.config import SamplingConfig
from bft.generation.endpoints import protocols
from bft.generation.endpoints.failures import status_error
from bft.generation.endpoints.limiter import ServerLoad, parse_load
from bft.generation.endpoints.protocols import FAILED_FINISH, ServedModel, ServedReply, normalize_finish_reason
from bft.generation.endpoints.transport import Transport
from bft.generation.errors import EndpointError, RequestRejected, RetryableError
from bft.generation.reasons import INPUT_TOO_LONG
from bft.generation.records import Generation

VERSION_ROUTES = {"vllm": ("/version",), "sglang": ("/server_info", "/get_server_info")}  # GET: {"version": ...}


def _text(value: object) -> str | None:
    """A version as the server gave it, when it is text."""
    return value if isinstance(value, str) and value else None


class Endpoint:
    """A client for one server URL, shared by all requests the stages send there."""

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 300.0, api: str = "auto", stream: bool = True
    ):
        self.transport = Transport(url, token, timeout)
        self.stream = stream  # OpenAI routes stream their replies (SSE), so progress is heard token by token
        self.tokenize_route = False  # the server counts prompt tokens at /tokenize (vLLM, SGLang)
        self.version: str | None = None  # the server's own version, where it says (`_read_version`)
        self.server_args: str | None = None  # a server bft started: its engine arguments (`run/pools.py` sets them)
        self.api = api  # auto | tgi | openai
        self.model_id: str | None = None
        self.model_revision: str | None = None
        self.model_root: str | None = None  # vLLM, SGLang: the path or Hub id `--model` was given (`id` may alias it)
        self.max_concurrent_requests: int | None = None
        self.max_input_tokens: int | None = None
        self.max_total_tokens: int | None = None  # the model's context length, where the server says it
        self.max_stop_sequences: int | None = None
        self.server_kind: str | None = None  # tgi | vllm | sglang | openai, for provenance
        self.limiter = None  # its AdaptiveLimit, shared by the stages (`run/pools.open_pools`)

    def __repr__(self) -> str:  # never shows the token
        return f"Endpoint({self.name!r}, api={self.api!r}, model={self.model_id!r})"

    @property
    def url(self) -> str:
        """The server's root URL (`transport.base_url`)."""
        return self.transport.url

    @property
    def name(self) -> str:
        """The URL messages show: never credentials (`transport.redact_url`)."""
        return self.transport.name

    @property
    def timeout(self) -> float:
        """Seconds of silence a request bears (`silence.py`), not its length."""
        return self.transport.timeout

    def reserve(self, in_flight: int) -> None:
        """Say that a stage may have `in_flight` requests here at once: the connection pool holds them all."""
        self.transport.reserve(in_flight)

    async def close(self) -> None:
        await self.transport.close()

    # -- what the server is ---------------------------------------------------------------------------

    async def probe(self) -> None:
        """Learn the server kind, its model and its limits (TGI `/info`, else OpenAI `/v1/models`)."""
        try:
            if self.api in ("auto", "tgi"):
                response = await self.transport.get("/info", 30)
                if response.status_code in (401, 403):
                    raise status_error(response.status_code, response.text, self.name + "/info")
                info = response.json_object() if response.status_code == 200 else None
                served = protocols.read_tgi_info(info) if info is not None else None
                if served is not None:
                    self.api = "tgi"
                    self._adopt(served)
                    self.version = _text(info.get("version"))  # TGI's `/info` says it (`router/src/lib.rs` Info)
                    return
            response = await self.transport.get("/v1/models", 30)
            if response.status_code in (401, 403):
                raise status_error(response.status_code, response.text, self.name + "/v1/models")
            if response.status_code != 200:
                raise EndpointError(
                    f"endpoint {self.name} answered HTTP {response.status_code} at /v1/models: it is neither TGI "
                    "nor an OpenAI-compatible server there (check the URL)"
                )
            self.api = "openai"
            self._adopt(protocols.read_model_list(response.json_object()))
            # both count a prompt's tokens for it (vLLM `serve/tokenize/protocol.py`, SGLang `/tokenize`)
            self.tokenize_route = self.server_kind in ("vllm", "sglang")
            await self._read_version()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise EndpointError(f"endpoint {self.name} is unreachable: {error or type(error).__name__}") from None

    async def _read_version(self) -> None:
        """The version an OpenAI-compatible server says of itself, for provenance (a fact, not a need: a route
        that does not answer leaves it None). vLLM: `GET /version`, `{"version": "0.32.0"}`
        (`serve/instrumentator/basic.py`); SGLang: `GET /server_info`, its server arguments plus `version`
        (`/get_server_info` in older releases; `srt/entrypoints/http_server.py`)."""
        for route in VERSION_ROUTES.get(self.server_kind or "", ()):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                response = await self.transport.get(route, 10)
                if response.status_code == 200:
                    self.version = _text(response.json_object().get("version"))
                    if self.version is not None:
                        return

    def _adopt(self, served: ServedModel) -> None:
        """Keep what the server said of itself and its model."""
        self.server_kind = served.server_kind
        self.model_id = served.model_id
        self.model_revision = served.model_revision
        self.model_root = served.model_root
        self.max_concurrent_requests = served.max_concurrent_requests
        self.max_input_tokens = served.max_input_tokens
        self.max_total_tokens = served.max_total_tokens
        self.max_stop_sequences = served.max_stop_sequences

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
            response = await self.transport.get("/metrics", 5.0)
        except (aiohttp.ClientError, TimeoutError):
            return None
        if response.status_code != 200:
            return None
        return parse_load(response.text, time.monotonic())

    async def healthy(self) -> bool:
        """Whether the server answers its health route now (`/health` on TGI, vLLM and SGLang, which answer
        503 once their engine has died; else `/v1/models`)."""
        route = "/health" if self.api == "tgi" or self.server_kind in ("vllm", "sglang") else "/v1/models"
        try:
            response = await self.transport.get(route, min(10.0, self.timeout))
            if response.status_code == 404 and route == "/health":  # behind a gateway that forwards /v1 only
                response = await self.transport.get("/v1/models", min(10.0, self.timeout))
        except (aiohttp.ClientError, TimeoutError):
            return False
        return response.status_code == 200

    # -- prompt budget --------------------------------------------------------------------------------

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
            body, _ = await self.transport.post("/tokenize", payload, generation=False)
        except (RequestRejected, EndpointError):  # no such route here, or it refuses the form: not asked again
            self.tokenize_route = False
            return None
        except RetryableError:  # a busy or failing server: the request itself will meet it
            return None
        count = body.get("count")
        return count if isinstance(count, int) else None

    # -- requests -------------------------------------------------------------------------------------

    async def chat(
        self,
        message: str,
        model: str | None,
        sampling: SamplingConfig,
        top_n: int | None = None,
        system: str | None = None,
        reasoning_tags: list[str] | tuple[str, ...] = (),
    ) -> Generation:
        """Send `message` as the user turn to `/v1/chat/completions` (after a `system` message if given);
        `top_n` asks for token alternatives; `reasoning_tags` mark inline reasoning, never cut for repeats."""
        model_name = model or self.model_id or "tgi"
        sent = self.sendable(sampling)
        payload = protocols.chat_request(message, system, model_name, sent, top_n, self.api == "tgi", self.stream)
        body = await self._post_generation("/v1/chat/completions", payload, sampling, reasoning_tags)
        return self._generation(protocols.read_chat(body, top_n), sampling)

    async def complete(
        self,
        prompt: str,
        model: str | None,
        sampling: SamplingConfig,
        top_n: int | None = None,
        reasoning_tags: list[str] | tuple[str, ...] = (),
    ) -> Generation:
        """Send a raw prompt: TGI `/generate`, or `/v1/completions` on OpenAI-compatible servers."""
        sent = self.sendable(sampling)
        if self.api == "tgi":
            body, headers = await self.transport.post("/generate", protocols.generate_request(prompt, sent, top_n))
            # no `sampling`: the room check is for OpenAI routes, where vLLM lowers `max_tokens` without a word
            return self._generation(protocols.read_generate(body, headers, top_n), None)
        payload = protocols.completion_request(prompt, model or self.model_id or "default", sent, top_n, self.stream)
        body = await self._post_generation("/v1/completions", payload, sampling, reasoning_tags)
        return self._generation(protocols.read_completion(body, top_n), sampling)

    async def _post_generation(
        self, route: str, payload: dict, sampling: SamplingConfig, reasoning_tags: list[str] | tuple[str, ...]
    ) -> dict[str, Any]:
        """POST a generation to an OpenAI route, its stream watched for every stop of the stage (the payload may
        carry fewer: `sendable`) and, when the stage asks, for a repeat past any inline reasoning."""
        body, _ = await self.transport.post(
            route, payload, stops=sampling.stop, repeat_chars=sampling.stop_on_repeat, reasoning_tags=reasoning_tags
        )
        return body

    def sendable(self, sampling: SamplingConfig) -> SamplingConfig:
        """`sampling` as this server takes it: no more stop sequences than it accepts (TGI's `/info`
        `max_stop_sequences`, vLLM's `VLLM_MAX_STOP_STRINGS`), the first ones as listed. The others are
        watched by bft: a streamed reply is hung up on past any of them, and the stage cuts every reply at
        its first (`method/stages.honour_stops`)."""
        limit = self.max_stop_sequences
        stops = [stop for stop in dict.fromkeys(sampling.stop) if stop]  # (an empty one would stop at once)
        if stops == sampling.stop and (not isinstance(limit, int) or len(stops) <= limit):
            return sampling
        return replace(sampling, stop=stops[:limit] if isinstance(limit, int) else stops)

    def _generation(self, reply: ServedReply, sampling: SamplingConfig | None) -> Generation:
        """The reply as bft keeps it, once it is known to be whole and not cut short for room."""
        self._check_room(reply.finish_reason, reply.usage, sampling)
        return generation_of(reply, self.name, self.model_id if self.api == "tgi" else None)

    def _check_room(self, finish: str | None, usage: dict[str, Any], sampling: SamplingConfig | None) -> None:
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


def generation_of(reply: ServedReply, where: str, model: str | None = None) -> Generation:
    """A whole reply as bft keeps it (live or from a batch, `run/batching.py`): `abort` / `error` finishes are
    failures, retried; `model` names the model when the reply does not (TGI names none)."""
    finish = reply.finish_reason
    if finish in FAILED_FINISH:
        raise RetryableError(f"finish_{finish}", f"{where} ended the generation with finish_reason {finish!r}")
    details = reply.usage.get("completion_tokens_details") or {}
    return Generation(
        text=reply.text,
        finish_reason=normalize_finish_reason(finish),
        prompt_tokens=reply.usage.get("prompt_tokens"),
        completion_tokens=reply.usage.get("completion_tokens"),
        model=reply.model or model,
        token_choices=reply.token_choices,
        reasoning=reply.reasoning,
        reasoning_tokens=details.get("reasoning_tokens") if isinstance(details, dict) else None,
    )
