"""Anthropic's Message Batches (`endpoints/batches/anthropic.py`) against a server that follows the published
API (`tests/servers/anthropic_batch.py`): a stage's requests go out in batches at half price, and what comes
back must read exactly as live replies do, or say why an item has none; what Anthropic cannot do is refused
before anything is paid for."""

import asyncio
import json

import aiohttp
import pytest

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.batches.anthropic import (
    ENVELOPE,
    MAX_BODY_BYTES,
    MAX_REQUESTS,
    AnthropicBatches,
    unsupported,
)
from bft.generation.endpoints.batches.base import BatchItem, BatchStatus, ItemFailure, split_lines
from bft.generation.endpoints.protocols import ServedReply
from bft.generation.errors import ConfigError, EndpointError, RequestRejected, RetryableError
from bft.generation.reasons import INPUT_INVALID, INPUT_TOO_LONG
from tests.servers.anthropic_batch import API_KEY, AnthropicBatchServer, Refused
from tests.servers.models import Reply, SeenRequest, paper_model

MODEL = "claude-test-4"
PAPERS = SamplingConfig(temperature=1.0, top_p=0.9, max_tokens=256)  # the papers' sampling
BACKTRANSLATE = (
    "Below is a response from an AI Assistant. Write the most likely question it would be a great answer.\n\n"
    "Feed a sourdough starter once a day with equal weights of flour and water.\n\nAnswer in the style of a user."
)
CURATE = "Rate the answer on a 5-point scale and say the score in the last line.\n\nFeed the starter daily."
REWRITE = "Please rewrite the draft to be helpful.\n\nDraft Response: Feed it daily.\n\nQuestion: How?"


def item(custom_id: str, text: str = BACKTRANSLATE, sampling: SamplingConfig = PAPERS, **fields) -> BatchItem:
    return BatchItem(custom_id, fields.pop("mode", "chat"), text, fields.pop("model", MODEL), sampling, **fields)


def client(server: AnthropicBatchServer, **options) -> AnthropicBatches:
    return AnthropicBatches(options.pop("api_key", API_KEY), server.url, key_env="ANTHROPIC_API_KEY", **options)


def replied(text: str) -> str:
    """What the scripted model answers to `text`."""
    return paper_model(SeenRequest("/v1/messages", {}, text)).text


async def until_ended(api: AnthropicBatches, batch_id: str) -> list[BatchStatus]:
    """Every status read while polling the batch, the last one ended (never a fixed wait: a busy machine only
    polls longer)."""
    seen = [await api.status(batch_id)]
    while seen[-1].state == "pending":
        await asyncio.sleep(0.02)
        seen.append(await api.status(batch_id))
    return seen


async def submitted(api: AnthropicBatches) -> str:
    """One item sent as a batch: its id."""
    try:
        return await api.submit([api.line(item("doc-0"))], "run-1")
    finally:
        await api.close()


async def submitted_and_ended(server: AnthropicBatchServer, items: list[BatchItem], **options) -> dict:
    """The items sent as one batch, ended by the server: their results."""
    api = client(server, **options)
    try:
        batch_id = await api.submit([api.line(i) for i in items], "run-1/backtranslate")
        server.end(batch_id)
        return await api.results(batch_id)
    finally:
        await api.close()


# -- a round trip -------------------------------------------------------------------------------------------


def test_a_batch_is_polled_until_it_ends_and_its_replies_read_as_live_ones():
    items = [
        item("doc-0-backtranslate"),
        item("doc-0-curate", CURATE, SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=64)),
        item("doc-0-rewrite", REWRITE, SamplingConfig(temperature=1.0, top_p=0.9, max_tokens=64, stop=["[/RES]"])),
        item("doc-1-short", BACKTRANSLATE, SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=3)),
    ]

    async def scenario(server: AnthropicBatchServer) -> tuple[list[BatchStatus], dict]:
        api = client(server)
        try:
            batch_id = await api.submit([api.line(i) for i in items], "run-1/backtranslate")
            first = await api.status(batch_id)  # the batch ends only when the test lets it
            server.delay = 0.05  # from now on it ends 50 ms after its creation
            return [first, *await until_ended(api, batch_id)], await api.results(batch_id)
        finally:
            await api.close()

    with AnthropicBatchServer(delay=None) as server:
        statuses, results = asyncio.run(scenario(server))
        (batch,) = server.batches.values()

    assert statuses[0].state == "pending" and statuses[0].counts["processing"] == 4
    assert statuses[-1].state == "ended"
    assert statuses[-1].counts == {"processing": 0, "succeeded": 4, "errored": 0, "canceled": 0, "expired": 0}
    assert set(results) == {i.custom_id for i in items}
    question = results["doc-0-backtranslate"]
    assert isinstance(question, ServedReply)
    assert question.text == replied(BACKTRANSLATE) and question.finish_reason == "stop"  # end_turn
    assert question.model == MODEL and question.reasoning is None
    assert question.usage == {
        "prompt_tokens": len(BACKTRANSLATE.split()),
        "completion_tokens": len(replied(BACKTRANSLATE).split()),
    }
    assert results["doc-0-curate"].text == "The answer is focused and complete.\nScore: 5"
    # a stop sequence ends the reply without itself, as on the live routes; bft's finish reason is "stop"
    assert results["doc-0-rewrite"].text == "[RES] Feed it daily. " and results["doc-0-rewrite"].finish_reason == "stop"
    assert results["doc-1-short"].finish_reason == "length"  # max_tokens
    assert results["doc-1-short"].text == "What should I " and results["doc-1-short"].usage["completion_tokens"] == 3
    # what went out: the user turn, Anthropic's sampling fields, never temperature and top_p together
    sent = {request["custom_id"]: request["params"] for request in batch.requests}
    assert sent["doc-0-backtranslate"] == {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": BACKTRANSLATE}],
        "top_p": 0.9,
    }
    assert sent["doc-0-curate"]["temperature"] == 0.0 and "top_p" not in sent["doc-0-curate"]
    assert sent["doc-0-rewrite"]["stop_sequences"] == ["[/RES]"]


def test_thinking_goes_to_reasoning_never_to_the_text():
    def thinker(request: SeenRequest) -> Reply:
        return Reply("Score: 4", reasoning="The answer is short but right.")

    with AnthropicBatchServer(script=thinker, delay=None) as server:
        results = asyncio.run(submitted_and_ended(server, [item("doc-0-curate", CURATE)]))
    assert results["doc-0-curate"].text == "Score: 4"
    assert results["doc-0-curate"].reasoning == "The answer is short but right."


def test_a_reply_the_model_ends_for_its_own_reason_keeps_that_reason():
    with AnthropicBatchServer(script=lambda request: Reply("I can't help.", finish="refusal"), delay=None) as server:
        results = asyncio.run(submitted_and_ended(server, [item("doc-0")]))
    assert results["doc-0"].finish_reason == "refusal"


# -- limits ---------------------------------------------------------------------------------------------------


def test_the_documented_limits_are_the_default_and_only_lower_ones_are_taken():
    api = AnthropicBatches(API_KEY)
    assert api.url == "https://api.anthropic.com"
    assert api.limits.max_requests == MAX_REQUESTS == 100_000
    assert api.limits.max_bytes + len(ENVELOPE) == MAX_BODY_BYTES == 256_000_000  # the body is what is measured
    assert AnthropicBatches(API_KEY, max_requests=500).limits.max_requests == 500
    with pytest.raises(ConfigError, match="1 to 100,000 requests"):
        AnthropicBatches(API_KEY, max_requests=200_000)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicBatches("", key_env="ANTHROPIC_API_KEY")


def test_requests_are_split_at_the_count_and_byte_limits_and_each_batch_is_accepted():
    items = [item(f"doc-{n}") for n in range(7)]
    with AnthropicBatchServer(delay=None, max_requests=3) as server:
        api = client(server, max_requests=3)
        lines = [api.line(i) for i in items]
        by_count = split_lines(lines, api.limits)
        assert [len(batch) for batch in by_count] == [3, 3, 1]
        body = 2 * len(lines[0]) + len(ENVELOPE)  # room for two requests in one body, not three
        server.max_bytes = body
        by_size = split_lines(lines, client(server, max_bytes=body).limits)
        assert [len(batch) for batch in by_size] == [2, 2, 2, 1]

        async def send_all() -> list[str]:
            try:
                return [await api.submit(batch, "run-1/backtranslate") for batch in by_size]
            finally:
                await api.close()

        ids = asyncio.run(send_all())
        assert [len(server.batches[i].requests) for i in ids] == [2, 2, 2, 1]
        assert server.submitted == {i.custom_id: 1 for i in items}  # each request paid for once


def test_a_batch_over_the_servers_limits_is_refused_with_its_error_named_and_nothing_is_paid():
    lines_of = lambda api: [api.line(item(f"doc-{n}")) for n in range(3)]  # noqa: E731

    async def submit(server: AnthropicBatchServer) -> None:
        api = client(server)
        try:
            await api.submit(lines_of(api), "run-1/backtranslate")
        finally:
            await api.close()

    with AnthropicBatchServer(max_requests=2) as server:
        with pytest.raises(RequestRejected) as too_many:
            asyncio.run(submit(server))
        server.max_requests, server.max_bytes = 100, 1000
        with pytest.raises(RequestRejected) as too_large:
            asyncio.run(submit(server))
        assert server.batches == {} and not server.submitted
    assert too_many.value.reason == INPUT_INVALID
    assert "HTTP 400" in str(too_many.value) and "invalid_request_error: requests: 3 given" in str(too_many.value)
    assert too_large.value.reason == INPUT_TOO_LONG and "request_too_large" in str(too_large.value)


def test_a_custom_id_given_twice_in_one_batch_is_refused():
    with AnthropicBatchServer() as server:
        api = client(server)
        with pytest.raises(RequestRejected, match="doc-0 is repeated"):
            asyncio.run(api.submit([api.line(item("doc-0")), api.line(item("doc-0"))], "run-1"))
        asyncio.run(api.close())


# -- items without a reply ----------------------------------------------------------------------------------


def test_an_invalid_request_is_refused_for_good_and_other_errors_may_be_sent_again():
    with AnthropicBatchServer(delay=None) as server:
        server.fail["doc-0"] = ("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")
        server.fail["doc-1"] = ("overloaded_error", "Overloaded")
        server.fail["doc-2"] = ("api_error", "Internal server error")
        items = [item(f"doc-{n}") for n in range(4)]
        results = asyncio.run(submitted_and_ended(server, items))
    assert results["doc-0"] == ItemFailure(
        "refused", "invalid_request_error: prompt is too long: 210000 tokens > 200000 maximum", 400
    )
    assert results["doc-1"] == ItemFailure("errored", "overloaded_error: Overloaded", 529)
    assert results["doc-2"] == ItemFailure("errored", "api_error: Internal server error", 500)
    assert isinstance(results["doc-3"], ServedReply)


def test_a_canceled_batch_keeps_the_replies_made_before_and_cancels_the_rest():
    async def scenario(server: AnthropicBatchServer) -> tuple[BatchStatus, BatchStatus, dict]:
        api = client(server)
        try:
            batch_id = await api.submit([api.line(item(f"doc-{n}")) for n in range(3)], "run-1")
            server.process(batch_id, 1)
            await api.cancel(batch_id)
            canceling = server.batches[batch_id].status
            assert canceling == "canceling"
            first = await api.status(batch_id)  # the cancellation is final at the next read
            return first, await api.status(batch_id), await api.results(batch_id)
        finally:
            await api.close()

    with AnthropicBatchServer(delay=None) as server:
        status, again, results = asyncio.run(scenario(server))
    assert status.state == again.state == "ended"
    assert status.counts["succeeded"] == 1 and status.counts["canceled"] == 2
    assert isinstance(results["doc-0"], ServedReply)
    assert [results[f"doc-{n}"].kind for n in (1, 2)] == ["canceled", "canceled"]


def test_an_expired_batch_keeps_its_replies_and_expires_the_rest():
    async def scenario(server: AnthropicBatchServer) -> dict:
        api = client(server)
        try:
            batch_id = await api.submit([api.line(item(f"doc-{n}")) for n in range(3)], "run-1")
            server.process(batch_id, 2)
            server.expire(batch_id)
            return await api.results(batch_id)
        finally:
            await api.close()

    with AnthropicBatchServer(delay=None) as server:
        results = asyncio.run(scenario(server))
    assert isinstance(results["doc-0"], ServedReply) and isinstance(results["doc-1"], ServedReply)
    assert results["doc-2"].kind == "expired"


def test_an_archived_batch_stops_the_run_and_a_pending_one_has_no_results_yet():
    """Archived results cannot be read: an error that stops the run, not a failed batch whose paid requests
    would be sent again."""

    async def scenario(server: AnthropicBatchServer) -> tuple[BatchStatus, list[str]]:
        api = client(server)
        try:
            batch_id = await api.submit([api.line(item("doc-0"))], "run-1")
            with pytest.raises(RetryableError, match="no results yet") as pending:
                await api.results(batch_id)
            assert pending.value.cause == "batch_pending"
            waiting = await api.status(batch_id)
            server.end(batch_id)
            server.archive(batch_id)
            errors = []
            for read in (api.status, api.results):
                with pytest.raises(EndpointError) as archived:
                    await read(batch_id)
                errors.append(str(archived.value))
            return waiting, errors
        finally:
            await api.close()

    with AnthropicBatchServer(delay=None) as server:
        waiting, errors = asyncio.run(scenario(server))
    assert waiting.state == "pending" and "in_progress; expires at" in waiting.detail
    assert all("results were archived at" in error and "can no longer be read" in error for error in errors)


# -- HTTP failures ------------------------------------------------------------------------------------------


def test_a_refused_key_stops_the_run_naming_its_variable():
    with AnthropicBatchServer() as server:
        api = client(server, api_key="sk-ant-wrong")
        with pytest.raises(EndpointError, match="refused the key in ANTHROPIC_API_KEY.*authentication_error"):
            asyncio.run(api.submit([api.line(item("doc-0"))], "run-1"))
        asyncio.run(api.close())
        assert server.batches == {}
        assert "sk-ant-wrong" not in repr(api)


def test_the_server_refuses_a_request_without_anthropic_version():
    async def bare_post(url: str) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session:
            headers = {"x-api-key": API_KEY}
            async with session.post(url + "/v1/messages/batches", json={"requests": []}, headers=headers) as answer:
                return answer.status, await answer.json()

    with AnthropicBatchServer() as server:
        status, body = asyncio.run(bare_post(server.url))
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in body["error"]["message"]


def test_an_unknown_batch_stops_the_run_naming_its_id():
    async def each_route(api: AnthropicBatches) -> list[str]:
        messages = []
        for call in (api.status, api.results, api.cancel):
            with pytest.raises(EndpointError) as unknown:
                await call("msgbatch_gone")
            messages.append(str(unknown.value))
        await api.close()
        return messages

    with AnthropicBatchServer() as server:
        messages = asyncio.run(each_route(client(server)))
    assert all("no batch msgbatch_gone" in message and "not_found_error" in message for message in messages)


def test_rate_limits_overloads_and_lost_connections_are_retried_after_the_servers_wait():
    async def status(api: AnthropicBatches, batch_id: str) -> BatchStatus:
        try:
            return await api.status(batch_id)
        finally:
            await api.close()

    with AnthropicBatchServer(delay=None) as server:
        api = client(server)
        batch_id = asyncio.run(submitted(api))
        server.refuse += [
            Refused(429, "rate_limit_error", "Number of requests has exceeded your rate limit", retry_after=7),
            Refused(529, "overloaded_error", "Overloaded"),
            Refused(500, "api_error", "Internal server error"),
        ]
        errors = []
        for _ in range(3):
            with pytest.raises(RetryableError) as retry:
                asyncio.run(status(api, batch_id))
            errors.append(retry.value)
        assert asyncio.run(status(api, batch_id)).state == "pending"
    assert [(e.cause, e.retry_after) for e in errors] == [("overloaded", 7.0), ("overloaded", None), ("http_500", None)]
    with pytest.raises(RetryableError) as gone:  # the server has stopped: nothing listens on its port
        asyncio.run(status(api, batch_id))
    assert gone.value.cause == "connection"


def test_the_key_is_sent_to_no_other_host_than_the_apis():
    async def results_elsewhere(server: AnthropicBatchServer) -> None:
        # the same server named otherwise: its results_url (127.0.0.1) is another host than `localhost`
        api = AnthropicBatches(API_KEY, server.url.replace("127.0.0.1", "localhost"))
        try:
            batch_id = await api.submit([api.line(item("doc-0"))], "run-1")
            server.end(batch_id)
            await api.results(batch_id)
        finally:
            await api.close()

    with (
        AnthropicBatchServer(delay=None) as server,
        pytest.raises(EndpointError, match="results at another host: http://127.0.0.1"),
    ):
        asyncio.run(results_elsewhere(server))


# -- a create whose answer was lost ---------------------------------------------------------------------------


def batch_of(server: AnthropicBatchServer, custom_id: str) -> str:
    """The id of the one batch on the server that holds `custom_id`."""
    (found,) = [b.id for b in server.batches.values() if custom_id in [r["custom_id"] for r in b.requests]]
    return found


def test_a_batch_made_before_its_answer_was_lost_is_adopted_on_retry_and_paid_once():
    async def run(server: AnthropicBatchServer) -> tuple[RetryableError, str]:
        ours, elsewhere = client(server, list_page=1), client(server)  # one batch a page: the list is paged
        try:
            yesterday = await elsewhere.submit([elsewhere.line(item("old-0"))], "other")  # as many requests
            server.batches[yesterday].created -= 86_400  # made a day ago: before any try of ours
            await ours.submit([ours.line(item("doc-0"))], "run-1")  # as many requests, but this client's own
            server.drop_creates = ["after_create"]
            with pytest.raises(RetryableError) as lost:
                await ours.submit([ours.line(item("doc-1"))], "run-1")
            await elsewhere.submit([elsewhere.line(item(f"other-{n}")) for n in range(2)], "other")  # 2 requests
            return lost.value, await ours.submit([ours.line(item("doc-1"))], "run-1")
        finally:
            await ours.close()
            await elsewhere.close()

    with AnthropicBatchServer(delay=None) as server:
        lost, adopted = asyncio.run(run(server))
        assert lost.cause == "connection" and len(server.batches) == 4
        assert adopted == batch_of(server, "doc-1")
        assert server.submitted == {"old-0": 1, "doc-0": 1, "doc-1": 1, "other-0": 1, "other-1": 1}


def test_a_create_that_never_reached_the_provider_is_made_on_retry():
    async def run(server: AnthropicBatchServer) -> tuple[RetryableError, str]:
        api = client(server)
        try:
            with pytest.raises(RetryableError) as lost:
                await api.submit([api.line(item("doc-0"))], "run-1")
            assert server.batches == {}
            return lost.value, await api.submit([api.line(item("doc-0"))], "run-1")
        finally:
            await api.close()

    with AnthropicBatchServer(delay=None) as server:
        server.drop_creates = ["before_create"]
        lost, made = asyncio.run(run(server))
        assert lost.cause == "connection" and list(server.batches) == [made]
        assert server.submitted == {"doc-0": 1}


def test_two_batches_that_could_be_the_lost_one_stop_the_run_naming_both():
    async def run(server: AnthropicBatchServer) -> EndpointError:
        ours, elsewhere = client(server), client(server)
        try:
            server.drop_creates = ["after_create"]
            with pytest.raises(RetryableError):
                await ours.submit([ours.line(item("doc-0"))], "run-1")
            await elsewhere.submit([elsewhere.line(item("other-0"))], "other")  # as many requests, same moment
            with pytest.raises(EndpointError) as unsure:
                await ours.submit([ours.line(item("doc-0"))], "run-1")
            return unsure.value
        finally:
            await ours.close()
            await elsewhere.close()

    with AnthropicBatchServer(delay=None) as server:
        unsure = str(asyncio.run(run(server)))
        assert len(server.batches) == 2  # nothing created a third time
        assert batch_of(server, "doc-0") in unsure and batch_of(server, "other-0") in unsure
        assert "2 batches of 1 requests" in unsure and "cancel those not needed" in unsure


# -- what Anthropic cannot do -------------------------------------------------------------------------------


def test_what_anthropic_cannot_do_is_refused_before_any_request():
    assert "no raw-completion route" in unsupported("raw", None, PAPERS)
    assert "no token probabilities" in unsupported("chat", 5, PAPERS)
    assert "from 0 to 1" in unsupported("chat", None, SamplingConfig(temperature=1.5, top_p=1.0))
    both = unsupported("chat", None, SamplingConfig(temperature=0.7, top_p=0.9))
    assert "temperature or top_p, not both" in both and "set top_p: 1.0" in both
    assert unsupported("chat", None, PAPERS) is None  # the papers' 1.0 is Anthropic's default: top_p alone
    assert unsupported("chat", None, SamplingConfig(temperature=0.0, top_p=1.0)) is None
    api = AnthropicBatches(API_KEY)
    with pytest.raises(ConfigError, match="doc-0: Anthropic's Messages API has no raw-completion route"):
        api.line(item("doc-0", mode="raw"))
    with pytest.raises(ConfigError, match="doc-0: .*no token probabilities"):
        api.line(item("doc-0", top_n=5))
    with pytest.raises(ConfigError, match="doc-0: Anthropic needs the stage's model"):
        api.line(item("doc-0", model=None))


def test_a_seed_is_left_out_as_anthropic_takes_none():
    line = AnthropicBatches(API_KEY).line(item("doc-0", sampling=SamplingConfig(top_p=0.9, seed=7)))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    params = json.loads(line)["params"]
    assert "seed" not in params and params["top_p"] == 0.9 and "temperature" not in params


def test_the_server_lists_its_batches_newest_first_a_page_at_a_time():
    async def pages(server: AnthropicBatchServer) -> tuple[list[str], dict, dict]:
        api = client(server)
        ids = [await submitted(api) for _ in range(3)]
        headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
        async with aiohttp.ClientSession(headers=headers) as session:
            route = server.url + "/v1/messages/batches"
            async with session.get(route, params={"limit": "2"}) as first:
                first_page = await first.json()
            async with session.get(route, params={"limit": "2", "after_id": first_page["last_id"]}) as second:
                return ids, first_page, await second.json()

    with AnthropicBatchServer(delay=None) as server:
        ids, first, second = asyncio.run(pages(server))
    assert [b["id"] for b in first["data"]] == ids[:0:-1] and first["has_more"] is True
    assert [b["id"] for b in second["data"]] == ids[:1] and second["has_more"] is False
    assert first["data"][0]["type"] == "message_batch" and first["data"][0]["processing_status"] == "in_progress"
