"""The HTTP transport to one server: its URL, the connection pool, GETs, and POSTs heard to their end.

bft speaks to every server with its own HTTP client (`aiohttp`, declared in setup.cfg):
`huggingface_hub`'s inference client refuses every URL under `HF_HUB_OFFLINE=1`, which offline clusters
set, and caps its connection pool below bft's own limits. The Hub flag keeps governing Hub access only.
aiohttp's connection pool hands out an idle connection in constant time; httpx's scans every pooled
connection per request, which cost about 2 ms a request at 128 connections (measured with cProfile).

A base URL may be written with or without `/v1` and a trailing slash (`http://host:8000/v1`, as vLLM and
the OpenAI SDK write it), or with a route bft adds itself (`.../v1/chat/completions`, `.../generate`):
`base_url` gives the server's root. Messages and files show `redact_url`'s form, never credentials.

A POST is heard to its end: a streamed reply (server-sent events, `streams.py`) is gathered into the JSON
object the server would have sent whole, and the request is abandoned only after `timeout` seconds in which
neither it nor any other generation request to the server heard anything (`silence.py`), never for its
length. Every failure leaves as one of bft's error kinds (`failures.py`). What the bodies mean (TGI,
OpenAI chat and completions) is `protocols.py`'s business, not this module's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from bft.generation.endpoints.failures import status_error
from bft.generation.endpoints.silence import Silence
from bft.generation.endpoints.streams import Gathered, MalformedStream, StreamError
from bft.generation.errors import RetryableError

# An idle connection is reused for at most this many seconds. The servers bft meets close theirs sooner
# than aiohttp's 15 s: uvicorn (vLLM, SGLang, `transformers serve`) after 5 s (`timeout_keep_alive`, vLLM's
# `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`). A connection the server has just closed, picked before the client has read
# its close (a busy event loop, e.g. while a tokenizer loads), fails the request it carries ("Server
# disconnected"): a retry, and a down count against a healthy server. Under 5 s, such a connection is
# dropped by age instead, whether or not the close has been read.
IDLE_REUSE_SECONDS = 3.0
# Routes bft adds itself: a URL given with one (`http://host:8000/v1/chat/completions`) means its server.
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1", "/generate_stream", "/generate", "/info")


def redact_url(url: str) -> str:
    """`url` without user:password and with query values hidden, for logs and files."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def base_url(url: str) -> str:
    """The server's root: `url` without a trailing slash or a trailing route of `ROUTES` (bft adds the routes)."""
    url = url.rstrip("/")
    route = next((route for route in ROUTES if url.endswith(route)), "")
    return url[: len(url) - len(route)]


@dataclass
class Response:
    """A GET's answer, read whole (small JSON bodies: /info, /v1/models, /health, /metrics)."""

    status_code: int
    text: str
    headers: Any

    def json(self) -> Any:
        return json.loads(self.text)

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, or an empty one when it is not one."""
        try:
            body = self.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}


class Transport:
    """HTTP to one server URL, shared by all requests the stages send there."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0):
        self.url = base_url(url)
        self.name = redact_url(self.url)  # what messages show: never credentials
        self.token = token
        self.timeout = timeout  # seconds of silence a request bears (`silence.py`), not its length
        self.silence = Silence(timeout)
        self.connections = 0  # requests in flight bft allows here, over all stages (`reserve`)
        self._http: aiohttp.ClientSession | None = None
        self._pool_size = 0  # the connections the open session was made for

    def __repr__(self) -> str:  # never shows the token
        return f"Transport({self.name!r})"

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
            connector = aiohttp.TCPConnector(
                limit=size, limit_per_host=size, ttl_dns_cache=300, keepalive_timeout=IDLE_REUSE_SECONDS
            )
            # no deadline on a reply's length: its silence is watched instead (`post`); connecting may
            # take at most the same time (a host that never answers)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
            self._http = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers)
            self._pool_size = size
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def get(self, route: str, timeout: float) -> Response:
        """GET `route`, read whole within `timeout` seconds (aiohttp's and the network's errors pass through)."""
        session = await self.http()
        async with session.get(self.url + route, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return Response(response.status, await response.text(errors="replace"), response.headers)

    async def post(
        self,
        route: str,
        payload: dict[str, Any],
        generation: bool = True,
        stops: list[str] | None = None,
        repeat_chars: int = 0,
        reasoning_tags: list[str] | tuple[str, ...] = (),
    ) -> tuple[dict[str, Any], Any]:
        """POST `payload` to `route`: the JSON object answered (a streamed reply gathered into the same
        shape, `streams.py`) and the response headers, or bft's error kind. A streamed reply is cut where
        it passes a stop sequence (`stops`, or the payload's own: a server may take fewer than the stage
        has) or, with `repeat_chars`, repeats itself past any inline reasoning (`streams.Gathered`).

        The request is abandoned (`RetryableError("timeout")`) only after `timeout` seconds in which neither
        it nor any other request to this server heard anything (`silence.py`); what a request that is not a
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
                    raise status_error(status, raw.decode("utf-8", "replace"), self.name + route, headers)
                if payload.get("stream") and response.content_type == "text/event-stream":
                    chat = route == "/v1/chat/completions"
                    watched = stops if stops is not None else payload.get("stop") or ()
                    gathered = Gathered(chat, watched, repeat_chars, reasoning_tags)
                    async for line in response.content:  # to the end of the body, so the connection is reused
                        watch.heard()
                        gathered.add_line(line)
                        if gathered.stopped and gathered.finish_reason is None:  # past where the reply ends (a
                            # stop the server ignores, a repeat): closing the connection cancels the generation
                            break
                    return gathered.body(), headers
                raw = await response.read()  # a whole body (TGI /generate, or a server that does not stream)
                watch.heard()
        except TimeoutError as error:
            raise RetryableError("timeout", f"{self.name}: {error}") from None
        except StreamError as error:
            raise status_error(error.status, error.body, self.name + route) from None
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
