"""OpenAI's Batch API client (`endpoints/batches/openai.py`) against the Files and Batch test server.

The server (`tests/servers/openai_batch.py`) follows OpenAI's API reference; the lines in the last tests are
written as the reference documents them (BatchRequestInput and BatchRequestOutput examples, a refused line
as openai/openai-openapi issue #302 shows it, an expired one as OpenAI's Batch guide does).
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.batches.base import BatchItem, BatchLimits, ItemFailure, split_lines
from bft.generation.endpoints.batches.openai import OpenAIBatches, read_output_line, request_line
from bft.generation.endpoints.protocols import ServedReply
from bft.generation.errors import EndpointError, RequestRejected, RetryableError
from tests.servers.models import Fault, SeenRequest, paper_model
from tests.servers.openai_batch import API_KEY, OpenAIBatchServer

SAMPLING = SamplingConfig(max_tokens=64)
TOO_LONG = "This model's maximum context length is 128000 tokens. However, you requested 1000024 tokens."


def prompt(document: str) -> str:
    """A backtranslation prompt: the paper's model answers each document with its own question."""
    return (
        "Below is a response. Write the most likely question for which this would be a great answer.\n\n"
        f"{document}\n\nAnswer in the style of an AI Assistant."
    )


def items(mode: str, count: int, start: int = 0) -> list[BatchItem]:
    return [
        BatchItem(f"{mode}-{i}", mode, prompt(f"Document number {i} about bread."), "gpt-test", SAMPLING)  # type: ignore[arg-type]
        for i in range(start, start + count)
    ]


def expected(item: BatchItem) -> str:
    return paper_model(SeenRequest("", {}, item.text)).text


def call(server: OpenAIBatchServer, use: Callable[[OpenAIBatches], Awaitable[Any]], **options: Any) -> Any:
    """`use(api)` run against `server`, the client closed after."""

    async def main() -> Any:
        api = OpenAIBatches(server.url, options.pop("token", API_KEY), **options)
        try:
            return await use(api)
        finally:
            await api.close()

    return asyncio.run(main())


def texts(results: dict[str, ServedReply | ItemFailure]) -> dict[str, str]:
    return {key: value.text if isinstance(value, ServedReply) else value.kind for key, value in results.items()}


# -- a whole round trip --------------------------------------------------------------------------------------


def test_chat_and_raw_batches_come_back_as_the_model_answered_them():
    chat, raw = items("chat", 3), items("raw", 2)
    with OpenAIBatchServer() as server:
        server.hold = True

        async def use(api: OpenAIBatches):
            ids = [await api.submit([api.line(i) for i in group], f"run-{n}") for n, group in enumerate((chat, raw))]
            first = [await api.status(i) for i in ids]
            with pytest.raises(ValueError, match="not ended"):
                await api.results(ids[0])
            server.hold = False
            polls = 0
            while {(await api.status(i)).state for i in ids} != {"ended"}:
                polls += 1
                assert polls < 5
            return ids, first, [await api.results(i) for i in ids], [await api.status(i) for i in ids]

        ids, first, results, last = call(server, use)
        assert [s.state for s in first] == ["pending", "pending"]
        assert [server.batches[i]["endpoint"] for i in ids] == ["/v1/chat/completions", "/v1/completions"]
        assert [server.batches[i]["metadata"] for i in ids] == [{"bft_label": "run-0"}, {"bft_label": "run-1"}]
        assert [s.counts for s in last] == [
            {"total": 3, "completed": 3, "failed": 0},
            {"total": 2, "completed": 2, "failed": 0},
        ]
        assert texts(results[0]) == {i.custom_id: expected(i) for i in chat}
        assert texts(results[1]) == {i.custom_id: expected(i) for i in raw}
        reply = results[0]["chat-0"]
        assert isinstance(reply, ServedReply) and reply.finish_reason == "stop" and reply.model == "gpt-test"
        assert reply.usage["prompt_tokens"] == len(chat[0].text.split()) and reply.usage["completion_tokens"] > 0
        assert server.submitted == server.answered == {i.custom_id: 1 for i in chat + raw}


def test_a_batch_waits_its_time_and_the_provider_lists_it():
    with OpenAIBatchServer(delay=3600) as server:

        async def use(api: OpenAIBatches):
            ids = [await api.submit([api.line(i)], f"wait-{i.custom_id}") for i in items("chat", 2)]
            waiting = [(await api.status(ids[0])).state for _ in range(2)]
            server.finish(ids[0])
            return ids, waiting, await api.status(ids[0])

        ids, waiting, ended = call(server, use)
        assert waiting == ["pending", "pending"] and ended.state == "ended"
        page = get(server, "/v1/batches?limit=1")
        assert (page["object"], [b["id"] for b in page["data"]], page["has_more"]) == ("list", [ids[1]], True)
        assert get(server, f"/v1/batches?after={ids[1]}")["data"][0]["status"] == "completed"
        upload = get(server, f"/v1/files/{server.batches[ids[0]]['input_file_id']}")
        assert (upload["object"], upload["purpose"], upload["filename"]) == ("file", "batch", "wait-chat-0.jsonl")


def get(server: OpenAIBatchServer, route: str) -> dict:
    request = urllib.request.Request(server.url + route, headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_batch_mixing_chat_and_raw_lines_is_refused_before_anything_is_uploaded():
    with OpenAIBatchServer() as server:
        lines = [request_line(i) for i in items("chat", 1) + items("raw", 1)]
        with pytest.raises(ValueError, match=r"mixes /v1/chat/completions and /v1/completions"):
            call(server, lambda api: api.submit(lines, "mixed"))
        assert server.files == {}


# -- limits ----------------------------------------------------------------------------------------------------


def test_the_documented_limits_hold_and_lines_cut_at_them_are_each_accepted():
    assert OpenAIBatches().limits == BatchLimits(max_requests=50_000, max_bytes=200_000_000)
    lines = [request_line(i) for i in items("chat", 7)]
    by_count = BatchLimits(max_requests=3, max_bytes=10**6)
    by_bytes = BatchLimits(max_requests=100, max_bytes=2 * len(lines[0]) + 10)
    for limits in (by_count, by_bytes):
        with OpenAIBatchServer(max_requests=limits.max_requests, max_bytes=limits.max_bytes) as server:
            groups = split_lines(lines, limits)

            async def use(api: OpenAIBatches, groups=groups):
                ids = [await api.submit(group, f"part-{n}") for n, group in enumerate(groups)]
                return [await api.status(i) for i in ids]

            statuses = call(server, use, max_requests=limits.max_requests, max_bytes=limits.max_bytes)
            assert [len(g) for g in groups] == ([3, 3, 1] if limits is by_count else [2, 2, 2, 1])
            assert [s.state for s in statuses] == ["ended"] * len(groups)
            assert sum(server.submitted.values()) == 7


def test_a_request_file_over_the_providers_byte_limit_is_refused_and_named():
    lines = [request_line(i) for i in items("chat", 3)]
    with OpenAIBatchServer(max_bytes=len(lines[0]) * 2) as server:
        with pytest.raises(RequestRejected) as refused:
            call(server, lambda api: api.submit(lines, "too-big"))
        message = str(refused.value)
        assert "/v1/files" in message and "request file of batch 'too-big'" in message and "too large" in message
        assert server.batches == {}


def test_more_requests_than_the_provider_takes_fail_the_batch_with_its_reason():
    lines = [request_line(i) for i in items("raw", 3)]
    with OpenAIBatchServer(max_requests=2) as server:
        status = call(server, lambda api: _submit_and_read(api, lines))
        assert status.state == "failed" and "too_many_requests" in status.detail and "limit is 2" in status.detail
        assert server.submitted == {}


def test_lines_over_the_clients_own_limits_are_not_sent():
    lines = [request_line(i) for i in items("raw", 3)]
    with OpenAIBatchServer() as server:
        with pytest.raises(ValueError, match="over the limits of one batch"):
            call(server, lambda api: api.submit(lines, "big"), max_requests=2)
        assert server.files == {}


async def _submit_and_read(api: OpenAIBatches, lines: list[bytes]):
    return await api.status(await api.submit(lines, "one"))


# -- items and batches that fail ---------------------------------------------------------------------------------


def test_failed_and_refused_items_say_why_and_whether_to_send_them_again():
    def script(request: SeenRequest):
        if "number 1 " in request.prompt:
            return Fault(400, TOO_LONG, "invalid_request_error")
        return paper_model(request)

    chat = items("chat", 4)
    with OpenAIBatchServer(script=script) as server:
        server.fail_ids = {"chat-2"}
        server.lose_ids = {"chat-3"}  # a completed batch without this item's line

        async def use(api: OpenAIBatches):
            batch_id = await api.submit([api.line(i) for i in chat], "failures")
            return await api.status(batch_id), await api.results(batch_id)

        status, results = call(server, use)
        assert status.counts == {"total": 4, "completed": 2, "failed": 2}
        assert texts(results) == {
            "chat-0": expected(chat[0]),
            "chat-1": "refused",
            "chat-2": "errored",
            "chat-3": "errored",
        }
        assert results["chat-3"].detail == "in neither result file of the completed batch"
        assert (results["chat-1"].status, results["chat-2"].status) == (400, 500)
        assert "maximum context length" in results["chat-1"].detail
        assert server.answered == {"chat-0": 1, "chat-3": 1}


@pytest.mark.parametrize("listed", [True, False], ids=["expired-lines", "absent-lines"])
def test_an_expired_batch_keeps_what_it_answered_and_expires_the_rest(listed):
    raw = items("raw", 4)
    with OpenAIBatchServer() as server:
        server.hold = True

        async def use(api: OpenAIBatches):
            batch_id = await api.submit([api.line(i) for i in raw], "late")
            server.expire(batch_id, answered=2, list_unfinished=listed)
            return await api.status(batch_id), await api.results(batch_id)

        status, results = call(server, use)
        assert status.state == "ended" and status.detail == "expired"
        assert texts(results) == {
            "raw-0": expected(raw[0]),
            "raw-1": expected(raw[1]),
            "raw-2": "expired",
            "raw-3": "expired",
        }
        said = "batch_expired: This request could not" if listed else "no result line: the batch expired"
        assert results["raw-3"].detail.startswith(said)  # both ways of saying it are read
        assert server.answered == {"raw-0": 1, "raw-1": 1}


def test_a_cancelled_batch_keeps_its_partial_output_and_cancels_the_rest():
    chat = items("chat", 3)
    with OpenAIBatchServer() as server:
        server.hold = True

        async def use(api: OpenAIBatches):
            batch_id = await api.submit([api.line(i) for i in chat], "stop")
            server.advance(batch_id, 1)
            await api.cancel(batch_id)
            cancelling = await api.status(batch_id)
            server.hold = False  # the provider gets round to it
            return (cancelling, await api.status(batch_id)), await api.results(batch_id)

        (cancelling, cancelled), results = call(server, use)
        assert (cancelling.state, cancelled.state, cancelled.detail) == ("pending", "ended", "cancelled")
        assert texts(results) == {"chat-0": expected(chat[0]), "chat-1": "canceled", "chat-2": "canceled"}


def test_a_failed_batch_says_the_providers_errors():
    with OpenAIBatchServer() as server:
        server.hold = True

        async def use(api: OpenAIBatches):
            batch_id = await api.submit([api.line(i) for i in items("chat", 2)], "doomed")
            server.fail(batch_id, "Enqueued token limit reached for gpt-test.", "token_limit_exceeded")
            return await api.status(batch_id)

        status = call(server, use)
        assert status.state == "failed"
        assert status.detail == "failed: token_limit_exceeded: Enqueued token limit reached for gpt-test."


def test_a_bad_line_fails_the_batch_naming_its_line():
    lines = [request_line(i) for i in items("chat", 2)]
    with OpenAIBatchServer() as server:
        status = call(server, lambda api: _submit_and_read(api, [lines[0], lines[1], lines[0]]))
        assert status.state == "failed" and "duplicate_custom_id" in status.detail and "(line 3)" in status.detail


# -- the provider refusing calls ------------------------------------------------------------------------------


def test_a_wrong_key_stops_the_run_and_names_its_variable():
    with OpenAIBatchServer() as server:
        with pytest.raises(EndpointError) as refused:
            call(server, lambda api: api.status("batch_x"), token="sk-wrong", token_env="OPENAI_API_KEY")
        assert "$OPENAI_API_KEY" in str(refused.value) and "401" in str(refused.value)
        assert "sk-wrong" not in str(refused.value)


def test_an_unknown_batch_is_named():
    with OpenAIBatchServer() as server:
        for use in (lambda api: api.status("batch_gone"), lambda api: api.cancel("batch_gone")):
            with pytest.raises(EndpointError, match="no batch 'batch_gone'"):
                call(server, use)


def test_a_busy_or_failing_provider_is_retried_as_it_asks():
    with OpenAIBatchServer() as server:
        server.refuse_next = [(429, 7.0), (503, None)]
        with pytest.raises(RetryableError) as busy:
            call(server, lambda api: api.status("batch_x"))
        assert (busy.value.cause, busy.value.retry_after) == ("overloaded", 7.0)
        with pytest.raises(RetryableError) as down:
            call(server, lambda api: api.submit([request_line(items("chat", 1)[0])], "x"))
        assert down.value.cause == "http_503"


def test_an_unreachable_provider_is_retried():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def use():
        api = OpenAIBatches(f"http://127.0.0.1:{port}/v1", "sk")
        try:
            await api.status("batch_x")
        finally:
            await api.close()

    with pytest.raises(RetryableError) as unreachable:
        asyncio.run(use())
    assert unreachable.value.cause == "connection" and f"127.0.0.1:{port}/v1/batches/batch_x" in str(unreachable.value)


# -- a create whose answer was lost ------------------------------------------------------------------------------


def input_files(server: OpenAIBatchServer) -> list[str]:
    return [file_id for file_id, file in server.files.items() if file["purpose"] == "batch"]


def test_a_batch_made_before_its_answer_was_lost_is_adopted_on_retry_and_paid_once():
    ours, other = items("chat", 2), items("chat", 2, start=2)
    with OpenAIBatchServer() as server:
        server.hold = True

        async def use(api: OpenAIBatches):
            earlier = await api.submit([api.line(i) for i in other[:1]], "stage")  # same label, another file
            server.drop_creates = ["after_create"]
            with pytest.raises(RetryableError) as lost:
                await api.submit([api.line(i) for i in ours], "stage")
            meanwhile = await api.submit([api.line(i) for i in other[1:]], "stage")  # listed before ours now
            return earlier, lost.value, meanwhile, await api.submit([api.line(i) for i in ours], "stage")

        earlier, lost, meanwhile, adopted = call(server, use, list_page=1)  # one batch a page: the list is paged
        assert lost.cause == "connection"
        assert len(server.batches) == 3 and len(input_files(server)) == 3  # nothing made or uploaded twice
        assert adopted not in (earlier, meanwhile)
        assert server.batches[adopted]["input_file_id"] in input_files(server)
        assert server.submitted == {i.custom_id: 1 for i in ours + other}


def test_a_create_that_never_reached_the_provider_is_made_on_retry_from_the_same_upload():
    ours = items("chat", 2)
    with OpenAIBatchServer() as server:
        server.hold = True
        server.drop_creates = ["before_create"]

        async def use(api: OpenAIBatches):
            with pytest.raises(RetryableError) as lost:
                await api.submit([api.line(i) for i in ours], "stage")
            assert server.batches == {}
            return lost.value, await api.submit([api.line(i) for i in ours], "stage")

        lost, made = call(server, use)
        assert lost.cause == "connection" and list(server.batches) == [made]
        assert input_files(server) == [server.batches[made]["input_file_id"]]  # uploaded once
        assert server.submitted == {i.custom_id: 1 for i in ours}


# -- lines as the reference writes them ------------------------------------------------------------------------


def test_request_lines_are_the_live_requests_in_the_reference_shape():
    chat = BatchItem("request-1", "chat", "What is 2+2?", "gpt-4o-mini", SamplingConfig(max_tokens=10, stop=["\n"]))
    raw = BatchItem("request-2", "raw", "2+2=", "gpt-4o-mini", SamplingConfig(max_tokens=5), top_n=3)
    chat_line, raw_line = json.loads(request_line(chat)), json.loads(request_line(raw))
    assert request_line(chat).endswith(b"\n") and request_line(chat).count(b"\n") == 1
    assert {k: chat_line[k] for k in ("custom_id", "method", "url")} == {
        "custom_id": "request-1",
        "method": "POST",
        "url": "/v1/chat/completions",
    }
    body = chat_line["body"]
    assert body["model"] == "gpt-4o-mini" and body["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert (body["max_tokens"], body["stop"], "stream" in body) == (10, ["\n"], False)
    assert (
        raw_line["url"] == "/v1/completions"
        and raw_line["body"]["prompt"] == "2+2="
        and raw_line["body"]["logprobs"] == 3
    )
    served_by_vllm = BatchItem("v-1", "raw", "2+2=", None, SAMPLING)
    assert "model" not in json.loads(request_line(served_by_vllm))["body"]
    with pytest.raises(ValueError, match="v-1: OpenAI's batch requests name a model"):
        OpenAIBatches().line(served_by_vllm)


REFERENCE_OUTPUT = (
    '{"id": "batch_req_wnaDys", "custom_id": "request-2", "response": {"status_code": 200, "request_id": '
    '"req_c187b3", "body": {"id": "chatcmpl-9758Iw", "object": "chat.completion", "created": 1711475054, '
    '"model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"role": "assistant", "content": "2 + 2 equals '
    '4."}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 24, "completion_tokens": 15, "total_tokens": '
    '39}, "system_fingerprint": null}}, "error": null}'
)


def test_output_lines_as_the_reference_writes_them_are_read():
    custom_id, reply = read_output_line(json.loads(REFERENCE_OUTPUT))
    assert custom_id == "request-2"
    assert reply == ServedReply(
        "2 + 2 equals 4.", "stop", {"prompt_tokens": 24, "completion_tokens": 15, "total_tokens": 39}, "gpt-4o-mini"
    )
    without_object = json.loads(REFERENCE_OUTPUT)
    del without_object["response"]["body"]["object"]  # a provider copying the format may leave it out
    assert read_output_line(without_object)[1] == reply
    completion = {
        "object": "text_completion",
        "model": "gpt-test",
        "choices": [
            {
                "index": 0,
                "text": " 4",
                "finish_reason": "length",
                "logprobs": {"tokens": [" 4"], "top_logprobs": [{" 4": -0.1, " 5": -2.0}]},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    _, reply = read_output_line(
        {"id": "r", "custom_id": "c", "response": {"status_code": 200, "body": completion}, "error": None}
    )
    assert isinstance(reply, ServedReply) and (reply.text, reply.finish_reason) == (" 4", "length")
    assert reply.token_choices is not None and reply.token_choices[0].top == [(" 4", -0.1), (" 5", -2.0)]


def test_failed_lines_as_the_reference_writes_them_say_why():
    refused = {  # openai/openai-openapi issue #302: a prompt over the context, in the error file
        "id": "batch_req_YTpo",
        "custom_id": "request-5",
        "response": {
            "status_code": 400,
            "request_id": "0538a1",
            "body": {
                "error": {
                    "message": TOO_LONG,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
        },
        "error": None,
    }
    expired = {  # OpenAI's Batch guide: a request the batch did not reach in its window
        "id": "batch_req_123",
        "custom_id": "request-3",
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    }
    busy = {
        "id": "r",
        "custom_id": "request-6",
        "response": {"status_code": 429, "body": {"error": {"message": "Rate limit"}}},
    }
    unreadable = {
        "id": "r",
        "custom_id": "request-7",
        "response": {"status_code": 200, "body": {"object": "chat.completion"}},
    }
    assert read_output_line(refused) == (
        "request-5",
        ItemFailure("refused", f"HTTP 400: context_length_exceeded: {TOO_LONG}", 400),
    )
    assert read_output_line(expired)[1].kind == "expired" and "batch_expired" in read_output_line(expired)[1].detail
    assert read_output_line(busy)[1] == ItemFailure("errored", "HTTP 429: Rate limit", 429)
    assert read_output_line(unreadable)[1].kind == "errored"
    with pytest.raises(RetryableError, match="without a custom_id"):
        read_output_line({"id": "r", "response": None})


def test_a_line_carries_at_most_the_four_stop_sequences_the_api_takes():
    """OpenAI's `stop` takes up to 4 sequences and vLLM's run_batch the same; a stage with more (the demo's
    rewrite has 5) sends the first 4, and the stage cuts its replies at the others."""
    stops = ["[/RES]", "\n\nQuestion:", "\n\n[RES]", "\n\nThe answer", "\n\n[Draft Response]"]
    item = BatchItem("chat-0", "chat", "Hello", "gpt-test", replace(SAMPLING, stop=stops))  # type: ignore[arg-type]
    assert json.loads(request_line(item))["body"]["stop"] == stops[:4]
