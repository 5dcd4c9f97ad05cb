"""Streamed replies folded into a whole one (`endpoints/streams.py`), on the chunk shapes vLLM 0.32 sends
(`vllm/entrypoints/openai/chat_completion/serving.py`, `completion/serving.py`; seen on the real server:
the finish reason rides on the last token's chunk, usage comes in a chunk with no choices)."""

import json

import pytest

from bft.generation.endpoints.streams import Gathered, MalformedStream, StreamError


def feed(chat: bool, *events) -> Gathered:
    gathered = Gathered(chat)
    for event in events:
        line = event if isinstance(event, str) else "data: " + json.dumps(event)
        gathered.add_line(line.encode() + b"\n")
    return gathered


def chat_chunk(content=None, finish=None, **delta):
    if content is not None:
        delta["content"] = content
    return {"model": "m", "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def test_chat_chunks_keep_alives_and_usage_make_the_whole_reply():
    gathered = feed(
        True,
        ": keep-alive",
        "",
        chat_chunk("", role="assistant"),
        chat_chunk("Hello"),
        chat_chunk(" there", finish="length"),  # the finish reason on the last token's chunk
        {"model": "m", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
        "data: [DONE]",
    )
    body = gathered.body()
    assert body["choices"][0]["message"]["content"] == "Hello there"
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2
    assert body["model"] == "m" and body["choices"][0]["logprobs"] is None


def test_reasoning_and_logprobs_are_gathered_apart_from_the_answer():
    item = {"token": "5", "logprob": -0.1, "top_logprobs": [{"token": "5", "logprob": -0.1}]}
    think = chat_chunk(reasoning="Let me see.")
    answer = chat_chunk("5", finish="stop")
    answer["choices"][0]["logprobs"] = {"content": [item]}
    body = feed(True, think, answer, "data: [DONE]").body()
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "5", "reasoning": "Let me see."}
    assert body["choices"][0]["logprobs"] == {"content": [item]}


def test_completion_chunks_keep_their_token_alternatives_and_count_without_usage():
    def chunk(text, top, finish=None):
        logprobs = {"tokens": [text], "top_logprobs": [top], "token_logprobs": [-0.1], "text_offset": [0]}
        return {"choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]}

    body = feed(False, chunk(" Paris", {" Paris": -0.2}), chunk(".", {".": -0.3}, "stop"), "data: [DONE]").body()
    choice = body["choices"][0]
    assert choice["text"] == " Paris." and choice["logprobs"]["tokens"] == [" Paris", "."]
    assert choice["logprobs"]["top_logprobs"] == [{" Paris": -0.2}, {".": -0.3}]
    assert body["usage"] == {"completion_tokens": 2}  # no usage chunk: the chunks that carried text


@pytest.mark.parametrize(
    "event, status",
    [
        ({"error": {"message": "Internal server error", "type": "InternalServerError", "code": 500}}, 500),
        ({"error": {"message": "bad", "code": 400}}, 400),
        ({"object": "error", "message": "bad input", "code": 400}, 400),  # SGLang's flat body
        ({"error": "no code at all"}, 500),
    ],
)
def test_an_error_event_is_the_error_its_status_says(event, status):
    with pytest.raises(StreamError) as failed:
        feed(True, chat_chunk("Hel"), event)
    assert failed.value.status == status


def test_a_stream_without_its_end_or_with_garbage_is_malformed():
    with pytest.raises(MalformedStream):
        feed(True, chat_chunk("Hel")).body()  # no finish reason, no [DONE]: cut short
    with pytest.raises(MalformedStream):
        feed(True, "data: {not json")


def test_text_past_a_stop_sequence_ends_the_reply_there_and_a_stop_at_the_end_does_not():
    """A server that ignores stops goes on after one (stopped: bft hangs up and cuts); one that sends the stop
    string and then its finish is read to its end as it came (the stage cuts it later)."""
    gathered = Gathered(False, stops=["[/RES]", "\n\n"])
    for piece in ("Hello", " wor", "ld[/R", "ES]", " more"):
        assert not gathered.stopped
        gathered.add({"choices": [{"index": 0, "text": piece}]})
    assert gathered.stopped
    assert gathered.body()["choices"][0] | {"logprobs": None} == {
        "index": 0, "text": "Hello world", "finish_reason": "stop", "logprobs": None
    }  # fmt: skip

    ended = Gathered(True, stops=["[/RES]"])
    for event in (chat_chunk("Hello [/RES]"), chat_chunk(finish="stop")):
        ended.add(event)
    assert not ended.stopped and ended.body()["choices"][0]["message"]["content"] == "Hello [/RES]"

    overshoot = Gathered(True, stops=["\n"])  # a server that stops on a token ending past the stop, and says so
    overshoot.add(chat_chunk("Score: 5\n\n", finish="stop"))
    assert overshoot.stopped and overshoot.finish_reason == "stop"  # read to its end: the transport goes on reading
    overshoot.add({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 3}})
    assert overshoot.body()["usage"] == {"prompt_tokens": 40, "completion_tokens": 3}

    first = Gathered(True, stops=["B", "A"])  # the earliest stop wins, whichever is listed first
    first.add(chat_chunk("xxAyyB and on"))
    assert first.stopped and first.body()["choices"][0]["message"]["content"] == "xx"


LOOP = "The starter needs flour and water every day. Keep it warm.\n\n"


def test_a_reply_that_repeats_itself_is_hung_up_on_where_the_repeat_begins():
    """With `repeat_chars`, a sentence or line said a second time ends the reply before it: bft hangs up
    (stopped), the text is what came before, the finish `stop`; short units and text still arriving don't count."""
    looping = Gathered(True, repeat_chars=20)
    pieces = [piece + " " for piece in (LOOP * 3).split(" ")]
    fed = 0
    while not looping.stopped:
        looping.add(chat_chunk(pieces[fed]))
        fed += 1
    assert fed < len(pieces) * 2 // 3  # hung up in the second round, not at the end
    choice = looping.body()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == (LOOP, "stop")

    short = Gathered(False, repeat_chars=20)  # "Keep it warm." (13 characters) twice is not a loop
    short.add(
        {
            "choices": [
                {"index": 0, "text": "Keep it warm. Feed it daily. Keep it warm. Done", "finish_reason": "length"}
            ]
        }
    )
    assert not short.stopped and short.body()["choices"][0]["finish_reason"] == "length"

    off = Gathered(True)  # not asked: the loop is read to its end, as the server sent it
    off.add(chat_chunk(LOOP * 3, finish="length"))
    assert not off.stopped and off.body()["choices"][0]["message"]["content"] == LOOP * 3


def test_repeats_are_looked_for_in_the_answer_not_in_inline_reasoning():
    """A server without a reasoning parser sends `<think>...</think>` as content: the reasoning may loop and the
    answer may say again what the reasoning said; neither is the answer repeating itself (the stage, on a whole
    reply, looks only past the reasoning too)."""
    tags = ["<think>", "</think>"]
    said = "The sky is blue because of scattering. "
    reply = Gathered(True, repeat_chars=10, reasoning_tags=tags)
    for piece in ("<think>\n", said, said, "\n</think>\n"):
        reply.add(chat_chunk(piece))  # a loop inside the reasoning (while open, then closed)
        assert not reply.stopped
    for piece in (said, "It scatters light. "):
        reply.add(chat_chunk(piece))  # the answer says once what the reasoning said
    assert not reply.stopped
    reply.add(chat_chunk("It scatters light. And more."))  # now the answer repeats itself
    text = reply.body()["choices"][0]["message"]["content"]
    assert reply.stopped and text == f"<think>\n{said}{said}\n</think>\n{said}It scatters light. "
