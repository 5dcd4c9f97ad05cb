"""Timing out on silence, not on length (`endpoints/silence.py`), and streamed replies (`endpoints/streams.py`).

Against the test server's streaming routes (vLLM's chunk shapes): a reply slower than `request_timeout`
is kept while its tokens come; a request waiting its turn is kept while the server streams to others;
a server silent on every request is left after `request_timeout`; a stream cut before its end, or ended by
an error event, is never taken for a short answer.
"""

import asyncio
import time

import pytest

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.client import Endpoint
from bft.generation.errors import RetryableError
from tests.servers.models import Reply
from tests.servers.tgi import TGITestServer

SAMPLING = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=64)
WORDS = " ".join(f"w{n}" for n in range(12))


def ask_all(url: str, prompts: list[str], timeout: float, mode: str = "chat", stream: bool = True) -> list:
    """Each prompt's Generation, or the error it met, asked at once."""

    async def main():
        endpoint = Endpoint(url, timeout=timeout, stream=stream)
        endpoint.reserve(len(prompts))
        await endpoint.probe()
        send = endpoint.chat if mode == "chat" else endpoint.complete
        try:
            return await asyncio.gather(*(send(p, None, SAMPLING) for p in prompts), return_exceptions=True)
        finally:
            await endpoint.close()

    return asyncio.run(main())


@pytest.mark.parametrize("mode", ["chat", "raw"])
def test_a_reply_slower_than_the_timeout_is_kept_while_its_tokens_come(mode):
    with TGITestServer(lambda r: Reply(WORDS, token_delay=0.25), flavor="vllm") as server:
        began = time.monotonic()
        (reply,) = ask_all(server.url, ["Write."], timeout=1.0, mode=mode)
        took = time.monotonic() - began
    assert not isinstance(reply, Exception), reply
    assert reply.text.split() == WORDS.split() and took > 2.5  # three times the timeout, and kept
    assert reply.completion_tokens == 12 and reply.finish_reason == "stop"


def test_a_request_waiting_its_turn_is_kept_while_the_server_streams_to_others():
    def script(request):
        if "queued" in request.prompt:
            return Reply("At last.", delay=2.5)  # silent 2.5 s before its first token, as in a server's queue
        return Reply(WORDS, token_delay=0.25)

    with TGITestServer(script, flavor="vllm") as server:
        busy, queued = ask_all(server.url, ["busy", "queued"], timeout=1.0)
    assert not isinstance(busy, Exception) and not isinstance(queued, Exception), (busy, queued)
    assert queued.text == "At last."


def test_a_server_silent_on_every_request_is_left_after_the_timeout():
    with TGITestServer(lambda r: Reply("Too late.", delay=3.0), flavor="vllm") as server:
        began = time.monotonic()
        (error,) = ask_all(server.url, ["Hello?"], timeout=1.0)
        took = time.monotonic() - began
    assert isinstance(error, RetryableError) and error.cause == "timeout"
    assert 0.9 < took < 2.9  # the timeout, a look more if this process ran late, not the server's 3 s


def test_a_whole_reply_counts_as_heard_for_the_others():
    """Not streamed (`stream: false`): each whole reply that arrives keeps the other requests alive."""

    def script(request):
        number = int(request.prompt)
        return Reply(f"Reply {number}.", delay=number)

    with TGITestServer(script, flavor="vllm") as server:
        replies = ask_all(server.url, [str(n) for n in range(1, 6)], timeout=2.0, stream=False)
    assert [r.text for r in replies] == [f"Reply {n}." for n in range(1, 6)]  # the last waited 5 s


@pytest.mark.parametrize("mode", ["chat", "raw"])
def test_a_stream_cut_before_its_end_is_retried_not_kept_short(mode):
    with TGITestServer(lambda r: Reply(WORDS, cut_after=4), flavor="vllm") as server:
        (error,) = ask_all(server.url, ["Write."], timeout=5.0, mode=mode)
    assert isinstance(error, RetryableError) and error.cause in ("connection", "malformed_response")


def test_an_engine_that_dies_mid_stream_is_named_as_such():
    dead = {
        "message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
        "type": "InternalServerError",
        "param": None,
        "code": 500,
    }
    with TGITestServer(lambda r: Reply(WORDS, stream_error=dead), flavor="vllm") as server:
        (error,) = ask_all(server.url, ["Write."], timeout=5.0)
    assert isinstance(error, RetryableError) and error.cause == "engine_dead" and "EngineCore" in str(error)
