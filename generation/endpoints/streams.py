"""Streamed OpenAI replies (server-sent events) gathered into the body the same request would get whole.

bft streams `/v1/chat/completions` and `/v1/completions` so that a reply's progress is heard token by token
(`silence.py`): a slow reply is told from a dead server. The chunks are then folded into the non-streamed
shape (`choices[0].message` or `choices[0].text`, `logprobs`, `finish_reason`, `usage`, `model`), so one
parser reads both. The chunk shapes are the OpenAI protocol's as vLLM implements it
(`vllm/entrypoints/openai/chat_completion/protocol.py` ChatCompletionStreamResponse, DeltaMessage;
`vllm/entrypoints/openai/completion/protocol.py` CompletionStreamResponse); SGLang and TGI send the same.

- `stream_options: {"include_usage": true}` asks for the token counts in a last chunk with no choices;
  a server that sends none leaves `usage` without them, and the chunks that carried text are counted
  instead (`streamed_chunks`): an estimate, about a token a chunk (vLLM holds back incomplete characters
  and stop strings; `transformers serve` sends whole words).
- An error event (`data: {"error": ...}`, vLLM's and SGLang's way to fail a stream already begun) becomes
  the error its status would have been.
- The stream must end with `data: [DONE]` or a finish reason; a connection that closes before either is a
  dropped reply (retried), never a short answer.
- A server that ignores the request's stop sequences (`transformers serve` with continuous batching does:
  it drops `stop_strings` from a batched request) would generate to `max_tokens` after one. Once text
  arrives past a stop sequence (`stopped`), bft stops reading, which closes the connection and so cancels
  the generation, and the reply is what a server that honours stops would have sent: the text before the
  first stop, finish reason `stop`, its completion tokens counted by chunks (its prompt tokens are then
  unknown: the usage chunk never comes). A server that sends the stop string and then ends (a finish reason
  in the same chunk, or `[DONE]`) is read to its end as usual.
- A stage may also ask bft to hang up on a reply that repeats one of its own sentences or lines
  (`sampling.stop_on_repeat`, `text.first_repeat`): a small model that has said its answer and loops on it
  until `max_tokens`. The reply is then the text before the repeat, finish reason `stop`, as for a stop.
"""

from __future__ import annotations

import json
from typing import Any

from bft.generation.text import RepeatFinder

STREAM_OPTIONS = {"include_usage": True}


class StreamError(Exception):
    """The server failed the stream after it began: `status` is the code its error event gives."""

    def __init__(self, status: int, body: str):
        super().__init__(body)
        self.status = status
        self.body = body


class MalformedStream(Exception):
    """A stream bft cannot read as the protocol's (not SSE, not JSON, cut short)."""


class Gathered:
    """The chunks of one streamed reply, folded as they come (`add`), then the whole body (`body`)."""

    def __init__(
        self,
        chat: bool,
        stops: list[str] | tuple[str, ...] = (),
        repeat_chars: int = 0,
        reasoning_tags: list[str] | tuple[str, ...] = (),
    ):
        self.chat = chat
        self.stops = [stop for stop in stops if stop]
        self.repeats = RepeatFinder(repeat_chars) if repeat_chars > 0 else None  # hang up on a repeat (0: never)
        # inline reasoning (`<think>...</think>` from a server without a reasoning parser) is not the answer:
        # repeats are looked for after it, as the stage does (`method/stages.split_reasoning`)
        self.reasoning_tags = tuple(reasoning_tags) if len(reasoning_tags) == 2 else None
        self._answer_from = 0
        self.stopped = False  # text arrived past where the reply ends: a stop the server ignores, or a repeat
        self._stop_at: int | None = None  # where the reply ends in the text (a stop sequence, a repeat), once seen
        self._joined = ""  # the text so far, for the searches (kept only when there is something to watch)
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.logprob_content: list[dict] = []  # chat: logprobs.content items
        self.tokens: list[str] = []  # completions: logprobs.tokens / top_logprobs
        self.top_logprobs: list[Any] = []
        self.has_logprobs = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.model: str | None = None
        self.streamed_chunks = 0
        self.done = False

    def add_line(self, line: bytes) -> None:
        """One line of the event stream (`data: ...`, a comment, a blank line between events)."""
        text = line.decode("utf-8", "replace").strip()
        if not text or text.startswith(":"):
            return  # event separator or keep-alive comment
        field, _, value = text.partition(":")
        if field != "data":
            return  # `event:`, `id:`, `retry:`: not used by these servers' replies
        value = value.strip()
        if value == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(value)
        except ValueError:
            raise MalformedStream(f"an event that is not JSON: {value[:120]!r}") from None
        if not isinstance(chunk, dict):
            raise MalformedStream(f"an event that is a JSON {type(chunk).__name__}, not an object")
        self.add(chunk)

    def add(self, chunk: dict) -> None:
        error = chunk.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            raise StreamError(status, json.dumps(chunk))
        if chunk.get("object") == "error":  # SGLang's error body, sent as an event
            code = chunk.get("code")
            raise StreamError(code if isinstance(code, int) and 400 <= code < 600 else 500, json.dumps(chunk))
        self.model = chunk.get("model") or self.model
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if self.chat:
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                thought = delta.get("reasoning") or delta.get("reasoning_content")
                if thought:
                    self.reasoning.append(thought)
                if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                    self.has_logprobs = True
                    self.logprob_content.extend(logprobs["content"])
            else:
                piece, thought = choice.get("text"), None
                if isinstance(logprobs, dict) and isinstance(logprobs.get("tokens"), list):
                    self.has_logprobs = True
                    self.tokens.extend(logprobs["tokens"])
                    self.top_logprobs.extend(logprobs.get("top_logprobs") or [None] * len(logprobs["tokens"]))
            if piece:
                self.text.append(piece)
                if self.stops or self.repeats:
                    self._watch(piece)
            if piece or thought:
                self.streamed_chunks += 1

    def _watch(self, piece: str) -> None:
        """Note where the reply ends: the first stop sequence (text after it says the server did not stop
        there), or the start of a repeated sentence or line (already text past the end)."""
        if self._stop_at is not None:
            self.stopped = True
            return
        searched_from = max(0, len(self._joined) - max((len(stop) for stop in self.stops), default=1) + 1)
        self._joined += piece
        hits = [(at, at + len(stop)) for stop in self.stops if (at := self._joined.find(stop, searched_from)) >= 0]
        if hits:
            self._stop_at, stop_end = min(hits)
            self.stopped = len(self._joined) > stop_end  # the same chunk went on past the stop
        elif self.repeats and not piece.isalnum():  # a unit ends only at a mark, a space or a new line
            start = self._answer_start()
            if start is None:
                return  # still reasoning
            if start != self._answer_from:  # the reasoning closed: the answer's units start over
                self.repeats, self._answer_from = RepeatFinder(self.repeats.min_chars), start
            at = self.repeats.find(self._joined[start:])
            if at is not None:
                self._stop_at, self.stopped = start + at, True

    def _answer_start(self) -> int | None:
        """Where the answer begins in the text so far: past the last closing reasoning tag; None while an
        opened reasoning has not closed."""
        if self.reasoning_tags is None:
            return 0
        opening, closing = self.reasoning_tags
        closed = self._joined.rfind(closing)
        if closed >= 0:
            return closed + len(closing)
        return None if opening in self._joined else 0

    def body(self) -> dict[str, Any]:
        """The reply as the server would have sent it whole (cut where it ends when `stopped`: the text before
        the cut is whole, so its finish is `stop` whatever the server said of the text past it)."""
        if self.stopped:
            self.finish_reason = "stop"
        if not self.done and self.finish_reason is None:
            raise MalformedStream("the stream ended before a finish reason or [DONE]")
        usage = dict(self.usage)
        if usage.get("completion_tokens") is None:  # no usage chunk: the text chunks, a token each
            usage["completion_tokens"] = self.streamed_chunks
        text = "".join(self.text)
        if self.stopped and self._stop_at is not None:
            text = text[: self._stop_at]
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.reasoning:
                message["reasoning"] = "".join(self.reasoning)
            logprobs = {"content": self.logprob_content} if self.has_logprobs else None
            choice = {"index": 0, "message": message, "finish_reason": self.finish_reason, "logprobs": logprobs}
        else:
            logprobs = {"tokens": self.tokens, "top_logprobs": self.top_logprobs} if self.has_logprobs else None
            choice = {"index": 0, "text": text, "finish_reason": self.finish_reason, "logprobs": logprobs}
        return {"model": self.model, "choices": [choice], "usage": usage}
