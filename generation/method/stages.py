"""The three stages of back-and-forth translation, each a prompt builder plus a verdict.

A stage turns its input record (the previous stage's kept record) into one request, and the model's
reply into this stage's record: kept with the new field filled in, or rejected with a reason.
Requests themselves (endpoints, retries, concurrency) belong to the engine.

- backtranslate (P2): document -> instruction
- curate (P1): (instruction, document) -> score; kept when score >= `min_score`
- rewrite (P3): (instruction, document) -> response between [RES] and [/RES]
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property

from bft.generation.config import (
    BacktranslateConfig,
    CurateConfig,
    DistillConfig,
    RewriteConfig,
    SamplingConfig,
    StageConfig,
)
from bft.generation.errors import ConfigError
from bft.generation.method.escaping import Escaper, unescape
from bft.generation.method.filters import matches_any
from bft.generation.method.markers import Sources
from bft.generation.method.parsing import (
    Parsed,
    expected_score,
    parse_answer,
    parse_instruction,
    parse_rewrite,
    parse_score,
    score_offset,
)
from bft.generation.method.prompts import PromptTemplate, load_template
from bft.generation.method.replies import check_reply
from bft.generation.reasons import (
    INSTRUCTION_COPIES_DOCUMENT,
    INSTRUCTION_META_TEXT,
    REWRITE_REFUSAL,
    REWRITE_UNGROUNDED,
    SCORE_BELOW_THRESHOLD,
    SCORE_PROBABILITIES_MISSING,
)
from bft.generation.records import KEPT, REJECTED, Generation, Provenance, StageRecord
from bft.generation.text import copy_overlap, first_repeat, grounding


@dataclass
class Verdict:
    """A stage's judgement of one reply: how it parsed, the fields it fills, and a reject reason.

    `reject` is set when the reply parsed but the stage still turns the pair down (a score under the
    threshold, an instruction that copies its document, a refusal); `parsed.reason` says why a reply
    did not parse at all.
    """

    parsed: Parsed
    fields: dict = field(default_factory=dict)
    reject: str | None = None


@dataclass
class Request:
    """What a stage wants sent: a chat user turn or a raw prompt (prefill included)."""

    mode: str
    text: str
    top_n: int | None = None  # ask for this many alternatives per generated token


class Stage:
    """Base class: prompt rendering shared by all stages; subclasses fill values and judge replies.

    Untrusted values (documents, and instructions a model wrote from them) are escaped by `escaper`
    before they enter a prompt. Replies are checked (`replies.py`) before they are parsed: `language`
    and `echo` switch the language and prompt-echo checks, which stages whose reply is free text use.
    """

    name: str = ""
    default_template: str = ""
    free_text_reply = True  # the reply is text in the document's language (not a score)
    samples = 1  # requests per record; above 1 the engine asks `combine` to merge the outcomes

    def __init__(self, config: StageConfig, escaper: Escaper | None = None, language: bool = True, echo: bool = True):
        self.config = config
        self.template: PromptTemplate = load_template(config.template or self.default_template)
        self.escaper = escaper
        self.check_language = language and self.free_text_reply
        self.check_echo = echo and self.free_text_reply

    def values(self, record: StageRecord) -> dict[str, str]:
        raise NotImplementedError

    def restore(self, text: str | None) -> str | None:
        """Undo the escaping in text the model copied from the prompt (reversible by design)."""
        return unescape(text) if self.escaper is not None and text else text

    def judge(self, record: StageRecord, reply: str, generation: Generation) -> Verdict:
        """Parse the reply; return the verdict, with the record fields to set when it is kept."""
        raise NotImplementedError

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        if not self.config.tokenizer:
            raise ConfigError(
                f"{self.name}.raw_format is chat_template but {self.name}.tokenizer is not set: give the served "
                "model's tokenizer, a local folder holding tokenizer_config.json or a Hub id"
            )
        return AutoTokenizer.from_pretrained(self.config.tokenizer)

    top_n: int | None = None

    @property
    def sampling(self) -> SamplingConfig:
        """The decoding parameters this stage sends (the provenance records these)."""
        return self.config.sampling

    def _sampling_text(self) -> str:
        """The sampling parameters as the provenance records them (one JSON text per stage, made once)."""
        sampling = self.sampling
        cached = getattr(self, "_sampling_cache", None)
        if cached is None or cached[0] != sampling:
            cached = (sampling, json.dumps(asdict(sampling), sort_keys=True))
            self._sampling_cache = cached
        return cached[1]

    def request(self, record: StageRecord) -> Request:
        values = self.values(record)
        if self.escaper is not None:
            values = {key: self.escaper.escape(value) for key, value in values.items()}
        if self.config.mode == "chat":
            return Request("chat", self.template.user_message(**values), self.top_n)
        if self.config.raw_format == "llama2":
            prompt = self.template.llama2_prompt(**values)
        else:
            messages = [{"role": "user", "content": self.template.user_message(**values)}]
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return Request("raw", prompt + self.config.prefill, self.top_n)

    def provenance(
        self, generation: Generation | None, parsed_status: str, attempts: int, endpoint, reasoning: str | None = None
    ) -> Provenance:
        """What this stage did to one document with `endpoint` (an `Endpoint`, the `CachedEndpoint` a cached reply
        came from, a batch's source, or None): the server's kind, version and, for one bft started, its engine
        arguments are the endpoint's (a cached reply's: those of the server that first gave it)."""
        return Provenance(
            stage=self.name,
            model_id=(generation.model if generation and generation.model else None)
            or getattr(endpoint, "model_id", None),
            model_revision=getattr(endpoint, "model_revision", None),
            api=getattr(endpoint, "api", None),
            mode=self.config.mode,
            template=self.template.name,
            template_sha256=self.template.sha256,
            sampling=self._sampling_text(),
            server=getattr(endpoint, "server_kind", None),
            server_version=getattr(endpoint, "version", None),
            server_args=getattr(endpoint, "server_args", None),
            prefill=self.config.prefill or None,
            raw_output=generation.text if generation else None,
            reasoning=reasoning or (generation.reasoning if generation else None),
            finish_reason=generation.finish_reason if generation else None,
            parse_status=parsed_status,
            prompt_tokens=generation.prompt_tokens if generation else None,
            completion_tokens=generation.completion_tokens if generation else None,
            attempts=attempts,
            cached=getattr(endpoint, "cached", None),
            first_asked_at=getattr(endpoint, "first_asked_at", None),
            first_asked_endpoint=getattr(endpoint, "first_asked_endpoint", None),
            first_asked_run=getattr(endpoint, "first_asked_run", None),
        )

    def outcome(self, record: StageRecord, generation: Generation, attempts: int, endpoint) -> StageRecord:
        """The record this stage writes for a successful request.

        The provenance keeps the server's reply as it came; parsing sees it cut at the first stop
        sequence, since some servers ignore `stop` (measured: `transformers serve` on `/v1/completions`).
        """
        raw = generation
        answer, reasoning = split_reasoning(generation.text, generation.reasoning, self.config.reasoning_tags)
        generation = honour_stops(replace(generation, text=answer, reasoning=reasoning), self.config.sampling)
        reply = (self.config.prefill if self.config.mode == "raw" else "") + generation.text
        odd = check_reply(
            generation.text,
            generation.finish_reason,
            record.document,
            self.template,
            self.check_language,
            self.check_echo,
        )
        verdict = Verdict(Parsed(None, odd)) if odd else self.judge(record, reply, generation)
        parsed = verdict.parsed
        provenance = [*record.provenance, self.provenance(raw, parsed.status, attempts, endpoint, reasoning)]
        flags = [*record.flags, f"markers_copied:{self.name}:{parsed.copied}"] if parsed.copied else record.flags
        if not parsed.ok:
            return replace(
                record, stage=self.name, status=REJECTED, reason=parsed.reason, provenance=provenance, flags=flags
            )
        return replace(
            record,
            stage=self.name,
            status=REJECTED if verdict.reject else KEPT,
            reason=verdict.reject,
            provenance=provenance,
            flags=flags,
            **verdict.fields,
        )

    def sources(self, record: StageRecord) -> Sources:
        """The texts this stage's reply may copy markers from (`method/markers.py`)."""
        return Sources(record.document, record.instruction, self.template.text)

    def failure(self, record: StageRecord, reason: str, detail: str, attempts: int, endpoint) -> StageRecord:
        """The record this stage writes when no usable reply could be had."""
        entry = self.provenance(None, reason, attempts, endpoint)
        entry.raw_output = detail or None
        return replace(record, stage=self.name, status=REJECTED, reason=reason, provenance=[*record.provenance, entry])


def split_reasoning(text: str, reasoning: str | None, tags: list[str]) -> tuple[str, str | None]:
    """The answer without inline reasoning between `tags` (`<think>`, `</think>`), and the reasoning
    (the server's own field first). No tags: the text is the answer."""
    if len(tags) != 2 or (tags[0] not in text and tags[1] not in text):
        return text, reasoning
    opening, closing = map(re.escape, tags)
    pattern = re.compile(f"{opening}(.*?)(?:{closing}|$)", re.S)
    inline = [m.group(1).strip() for m in pattern.finditer(text)]
    answer = pattern.sub("", text)
    if tags[1] in answer:  # the chat template opened the reasoning in the prompt: all before the close is reasoning
        head, _, answer = answer.rpartition(tags[1])
        inline.insert(0, head.strip())
    joined = "\n".join(part for part in [reasoning or "", *inline] if part)
    return answer.lstrip(), joined or None


def honour_stops(generation: Generation, sampling: SamplingConfig) -> Generation:
    """`generation` cut before its first stop sequence, or where it starts repeating itself when the stage asks
    (`stop_on_repeat`), with finish reason `stop`: what a streamed reply gets from bft's hang-up
    (`endpoints/streams.py`), for replies that come whole."""
    text = generation.text
    cuts = [text.find(stop) for stop in sampling.stop if stop and stop in text]
    if sampling.stop_on_repeat > 0 and (repeat := first_repeat(text, sampling.stop_on_repeat)) is not None:
        cuts.append(repeat)
    if not cuts:
        return generation
    return replace(generation, text=text[: min(cuts)], finish_reason="stop")


class Backtranslate(Stage):
    name = "backtranslate"
    default_template = "backtranslate"
    config: BacktranslateConfig

    def values(self, record: StageRecord) -> dict[str, str]:
        return {"response": record.document}

    def request_text(self, document: str) -> str:
        """The prompt this stage would send for `document` (for context-length checks)."""
        probe = StageRecord(id="", stage=self.name, status="", document=document, position=0, input_location="")
        return self.request(probe).text

    def judge(self, record, reply, generation):
        # a prefill here only steers the model ("The question is:"): the instruction is what follows it
        parsed = parse_instruction(generation.text, generation.finish_reason, self.config.max_instruction_chars)
        instruction = self.restore(parsed.value)
        verdict = Verdict(parsed, {"instruction": instruction, "response": record.document})
        if parsed.ok and matches_any(instruction, self.config.meta_patterns):
            verdict.reject = INSTRUCTION_META_TEXT
        elif parsed.ok and copy_overlap(instruction, record.document) > self.config.max_copy_overlap:
            verdict.reject = INSTRUCTION_COPIES_DOCUMENT
        return verdict


class Curate(Stage):
    name = "curate"
    default_template = "curate"
    config: CurateConfig
    free_text_reply = False  # a rubric score; its reasoning may quote the rubric

    def __init__(self, config: CurateConfig, **checks):
        super().__init__(config, **checks)
        self.top_n = config.top_n_tokens if config.score_mode == "expected" else None
        self.samples = config.samples

    @property
    def sampling(self) -> SamplingConfig:
        """With `score_mode: expected`, temperature 1 and no nucleus cut: servers differ in whether the
        alternatives they return come before or after their sampling warpers (TGI: after; vLLM V1:
        before), and a cut distribution inflates the expected score (true 4.39 becomes 4.60 after
        top-p 0.9). Untruncated, every server returns the model's own distribution."""
        if self.config.score_mode != "expected":
            return self.config.sampling
        return replace(self.config.sampling, temperature=1.0, top_p=1.0)

    def combine(self, record: StageRecord, results: list[StageRecord]) -> StageRecord:
        """`samples` scorings of one pair as one record: scores averaged, every reply in the provenance."""
        base = len(record.provenance)
        provenance = [*record.provenance, *(r.provenance[base] for r in results)]
        scores = [r.score for r in results if r.score is not None]
        if not scores:  # no sample gave a score: rejected for the first sample's reason
            return replace(results[0], provenance=provenance)
        mean = sum(scores) / len(scores)
        expected = [r.expected_score for r in results if r.expected_score is not None]
        expected_mean = sum(expected) / len(expected) if expected else None
        if self.config.score_mode == "expected":
            value, missing = expected_mean, SCORE_PROBABILITIES_MISSING
        else:
            value, missing = mean, None
        reason = missing if value is None else (SCORE_BELOW_THRESHOLD if value < self.config.threshold else None)
        return replace(
            results[0],
            status=REJECTED if reason else KEPT,
            reason=reason,
            score=int(mean + 0.5),
            mean_score=round(mean, 4),
            expected_score=expected_mean,
            provenance=provenance,
        )

    def values(self, record: StageRecord) -> dict[str, str]:
        return {"generated_instruction": record.instruction, "output": record.document}

    def judge(self, record, reply, generation):
        sources = self.sources(record)
        parsed = parse_score(reply, sources=sources)
        verdict = Verdict(parsed, {"score": parsed.value, "expected_score": None})
        if not parsed.ok:
            return verdict
        expected = None
        if generation.token_choices:
            prefill = len(reply) - len(generation.text)
            expected = expected_score(generation.token_choices, generation.text, score_offset(reply, sources) - prefill)
            verdict.fields["expected_score"] = expected
        if self.config.score_mode == "expected":
            if expected is None:
                verdict.reject = SCORE_PROBABILITIES_MISSING
            elif expected < self.config.threshold:
                verdict.reject = SCORE_BELOW_THRESHOLD
        elif parsed.value < self.config.threshold:
            verdict.reject = SCORE_BELOW_THRESHOLD
        return verdict


class Rewrite(Stage):
    name = "rewrite"
    default_template = "rewrite"
    config: RewriteConfig

    def values(self, record: StageRecord) -> dict[str, str]:
        return {"response": record.document, "instruction": record.instruction}

    def judge(self, record, reply, generation):
        parsed = parse_rewrite(reply, generation.finish_reason, tuple(self.config.sampling.stop), self.sources(record))
        if not parsed.ok:
            return Verdict(parsed)
        response = self.restore(parsed.value)
        share = round(grounding(response, record.document), 4)
        verdict = Verdict(parsed, {"response": response, "grounding": share})
        if matches_any(response, self.config.refusal_patterns):
            verdict.reject = REWRITE_REFUSAL
        elif self.config.min_grounding is not None and share < self.config.min_grounding:
            verdict.reject = REWRITE_UNGROUNDED
        return verdict


class Distill(Stage):
    """BAFT's "filtering + distilling" baseline: the instruction answered without the document."""

    name = "distill"
    default_template = "distill"
    config: DistillConfig

    def values(self, record: StageRecord) -> dict[str, str]:
        return {"instruction": record.instruction}

    def judge(self, record, reply, generation):
        parsed = parse_answer(reply, generation.finish_reason)
        return Verdict(parsed, {"response": self.restore(parsed.value)})


STAGE_CLASSES = {cls.name: cls for cls in (Backtranslate, Curate, Rewrite, Distill)}


def build_stage(name: str, config: StageConfig, **options) -> Stage:
    """The stage `name`; `options` are `escaper`, `language` and `echo` (see `Stage`)."""
    return STAGE_CLASSES[name](config, **options)
