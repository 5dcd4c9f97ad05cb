"""Idle connections are not reused past the servers' keep-alive: no request is sent on a connection the
server has closed (the "connection" retry seen against the real vLLM after a pause in the client).

The server is a real uvicorn (what vLLM, SGLang and `transformers serve` run on), answering each request
with the client port it came from, so the test sees which connection carried it.
"""

import asyncio
import inspect
import json
import threading
import time

import pytest
import uvicorn

from bft.generation.endpoints import transport
from bft.generation.endpoints.transport import IDLE_REUSE_SECONDS, Transport


async def client_port(scope, receive, send):
    """An ASGI app: every request is answered with the client's own port."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = json.dumps({"port": scope["client"][1]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def uvicorn_url():
    server = uvicorn.Server(uvicorn.Config(client_port, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_idle_reuse_is_shorter_than_uvicorns_keep_alive():
    # uvicorn's default, which vLLM (VLLM_HTTP_TIMEOUT_KEEP_ALIVE), SGLang and `transformers serve` keep
    keep_alive = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    assert keep_alive > IDLE_REUSE_SECONDS


def test_a_connection_idle_too_long_is_not_reused(uvicorn_url, monkeypatch):
    monkeypatch.setattr(transport, "IDLE_REUSE_SECONDS", 0.5)  # the rule, on a shorter clock

    async def ports() -> list[int]:
        link = Transport(uvicorn_url, None, 30.0)
        try:
            seen = []
            for pause in (0.0, 0.05, 1.2):  # reused right away and after a short pause; not after a long one
                await asyncio.sleep(pause)
                seen.append(json.loads((await link.get("/", timeout=30)).text)["port"])
            return seen
        finally:
            await link.close()

    first, soon, late = asyncio.run(ports())
    assert soon == first  # the pool still reuses a connection within the window
    assert late != first  # past it: a new connection, never one the server may have closed
