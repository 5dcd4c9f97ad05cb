"""Run configuration: typed, documented dataclasses shared by the CLI, YAML files and the docs.

A run config is one YAML file whose keys mirror these dataclasses (see `generation/demo/demo.yaml`
and the README's "Run configuration"). Unknown keys and wrong types are errors that name the key, and
the resolved config is written next to the output so that a run can be reproduced.

Defaults follow the papers: nucleus sampling with T=1.0 and p=0.9 for every stage (BAFT sec. 3), keep
only curation score 5 (BAFT; Humpback's A_5), prompts P1-P3 verbatim, chat requests.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bft.generation.errors import ConfigError

# The prompts' own markers, escaped in untrusted text before it enters a prompt (`method/escaping.py`).
DEFAULT_MARKERS = (
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<</SYS>>",
    "[RES]",
    "[/RES]",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<s>",
    "</s>",
)
# Instructions that talk about the task, and rewrites that decline (`method/filters.py`).
DEFAULT_META_PATTERNS = [
    r"\bmost likely question\b",
    r"\bthe (text|passage|answer|response) (below|above)\b",
    r"\bcandidate answer\b",
    r"\binstruction backtranslation\b",
    r"\b(write|generate) (a|the) (question|instruction) (for|to which)\b",
]
DEFAULT_REFUSAL_PATTERNS = [
    r"^\W*(i'?m|i am) (sorry|afraid)\b",
    r"^\W*i (cannot|can'?t|won'?t|am unable to|'m unable to)\b",
    r"^\W*as an ai( language model)?\b",
    r"^\W*i apologi[sz]e\b",
    r"^\W*unfortunately,? i (cannot|can'?t)\b",
]
STAGES = ("backtranslate", "curate", "rewrite")  # the pipeline, in order
ALL_STAGES = (*STAGES, "distill")  # distill runs alone, over the curated pairs of an earlier output


@dataclass
class SamplingConfig:
    """Decoding parameters sent with every request of a stage."""

    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (papers: 1.0)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling p (papers: 0.9)."})
    max_tokens: int = field(default=1024, metadata={"help": "Most tokens the model may generate."})
    stop: list[str] = field(default_factory=list, metadata={"help": "Stop sequences."})
    seed: int | None = field(default=None, metadata={"help": "Sampling seed, when the server honours one."})


@dataclass
class StageConfig:
    """How one stage talks to its model.

    `mode: chat` sends the prompt (without the Llama-2 `[INST]` wrapper) as the user turn to
    `/v1/chat/completions`; the server applies the model's chat template. `mode: raw` sends the prompt
    text itself to TGI's `/generate` or an OpenAI-compatible `/v1/completions`: either the papers'
    literal `[INST] ... [/INST]` form (`raw_format: llama2`) or the user turn wrapped by the model's own
    chat template on the client (`raw_format: chat_template`, needs `tokenizer`). In raw mode an answer
    `prefill` is appended to the prompt and counted as the start of the reply.
    """

    mode: str = field(default="chat", metadata={"help": "chat | raw"})
    raw_format: str = field(default="llama2", metadata={"help": "raw prompts: llama2 | chat_template"})
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer (local dir or Hub id) for raw_format chat_template; the embedded model's by default."
        },
    )
    prefill: str = field(
        default="",
        metadata={
            "help": "Raw mode only: text that starts the model's answer. Curate and rewrite parse it as part of "
            "the reply (`Score:`, `[RES]`); backtranslate takes the instruction from what follows it."
        },
    )
    template: str = field(
        default="", metadata={"help": "Prompt template name or .txt path; the stage's paper prompt by default."}
    )
    reasoning_tags: list[str] = field(
        default_factory=lambda: ["<think>", "</think>"],
        metadata={
            "help": "Reasoning models: the tags around inline reasoning (DeepSeek-R1, Qwen3). The text between "
            "them is kept in the provenance (`reasoning`) and never parsed; [] reads the whole reply as the answer."
        },
    )
    model: str | None = field(
        default=None, metadata={"help": "Model name sent in requests; discovered from the endpoint when unset."}
    )
    endpoints: list[str] = field(
        default_factory=list, metadata={"help": "Endpoints for this stage; the run's when empty."}
    )
    max_concurrency: int | Literal["auto"] | None = field(
        default="auto",
        metadata={
            "help": "Requests in flight per endpoint: auto (default) finds each endpoint's best load by itself "
            "(endpoints/limiter.py); a number fixes it. One limit per endpoint, shared by the stages that send "
            "there (the largest number any of them sets)."
        },
    )
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class BacktranslateConfig(StageConfig):
    """Stage 1 (P2): write the instruction a document answers."""

    max_instruction_chars: int = field(default=2000, metadata={"help": "Longer instructions are rejected."})
    max_copy_overlap: float = field(
        default=0.5,
        metadata={"help": "Reject instructions whose word 5-grams are more than this share copied from the document."},
    )
    meta_patterns: list[str] = field(
        default_factory=lambda: list(DEFAULT_META_PATTERNS),
        metadata={"help": "Regular expressions of instructions that talk about the task (rejected)."},
    )
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_tokens=256))


@dataclass
class CurateConfig(StageConfig):
    """Stage 2 (P1): score each (instruction, document) pair on the 5-point rubric and keep the best."""

    score_mode: str = field(
        default="parsed",
        metadata={
            "help": "parsed: keep on the score the model wrote. expected: keep on the expected score sum p(k)*k "
            "from the score token's probabilities (needs an endpoint that returns them)."
        },
    )
    min_score: float | None = field(
        default=None,
        metadata={"help": "Keep pairs scoring at least this; default 5 (parsed, papers) or 4.5 (expected, Humpback)."},
    )
    top_n_tokens: int = field(
        default=5, metadata={"help": "Alternatives asked per generated token when score_mode is expected."}
    )
    samples: int = field(
        default=1,
        metadata={
            "help": "Scoring samples per pair; above 1 their scores are averaged (`mean_score`) and the "
            "threshold applies to the mean (one reading of Humpback's fractional 'score >= 4.5')."
        },
    )
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_tokens=512))

    @property
    def threshold(self) -> float:
        """The score a pair needs to be kept, in the units of `score_mode`."""
        if self.min_score is not None:
            return self.min_score
        return 4.5 if self.score_mode == "expected" else 5.0


@dataclass
class RewriteConfig(StageConfig):
    """Stage 3 (P3): rewrite the document into a response to the instruction, grounded in it."""

    refusal_patterns: list[str] = field(
        default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS),
        metadata={"help": "Regular expressions of refusals at the start of a rewrite (rejected)."},
    )
    min_grounding: float | None = field(
        default=None,
        metadata={"help": "Reject rewrites whose share of word 3-grams found in the document is lower (off: None)."},
    )
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_tokens=2048))


@dataclass
class DistillConfig(StageConfig):
    """BAFT's baseline: the aligned model answers each curated instruction without seeing the document."""

    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_tokens=2048))


@dataclass
class CorpusConfig:
    """Where documents come from."""

    path: str = field(
        default="", metadata={"help": "Local .jsonl/.jsonl.gz/.parquet file or folder, or a Hub dataset id."}
    )
    text_field: str = field(default="text", metadata={"help": "Column holding the document text."})
    id_field: str = field(default="id", metadata={"help": "Column holding the document id."})
    split: str = field(default="train", metadata={"help": "Hub datasets: split to stream."})
    revision: str | None = field(default=None, metadata={"help": "Hub datasets: revision (tag, branch or commit)."})
    limit: int | None = field(default=None, metadata={"help": "Read at most this many documents."})
    duplicate_ids: str = field(
        default="error",
        metadata={
            "help": "A document id seen twice: error (stop, naming both records) or rename (the later one "
            "becomes ID#2, ID#3, ... and is flagged duplicate_id)."
        },
    )
    invalid_utf8: str = field(
        default="reject",
        metadata={
            "help": "A line that is not valid UTF-8: reject (a rejected record, reason invalid_utf8), replace "
            "(undecodable bytes become U+FFFD, flag invalid_utf8_replaced) or error (stop)."
        },
    )
    malformed_lines: Literal["reject", "error"] = field(
        default="reject",
        metadata={
            "help": "A JSON line that does not parse, or is JSON but not an object: reject (a rejected record "
            "under its location id FILE:LINE, reason malformed_json or not_a_json_object; the run reads on) or "
            "error (stop, naming the file and line). A file that is a JSON array is always an error."
        },
    )
    invalid_unicode: str = field(
        default="reject",
        metadata={
            "help": "Text that cannot be written as UTF-8 (lone UTF-16 surrogates, e.g. from a JSON \\ud83d "
            "escape) in a text, id, URL or source: reject (reason invalid_unicode) or replace (U+FFFD, flag "
            "invalid_unicode_replaced). An id is always written with U+FFFD."
        },
    )
    max_record_bytes: int = field(
        default=64 << 20,
        metadata={"help": "JSON lines longer than this are rejected (record_too_large) without being loaded."},
    )


@dataclass
class SegmentConfig:
    """Humpback's header segments (see `generation/corpus/segments.py`); off unless `mode: headers`."""

    mode: str = field(
        default="none",
        metadata={"help": "none: whole documents (BAFT) | headers: the text under each HTML header (Humpback)."},
    )
    min_chars: int = field(default=600, metadata={"help": "Shorter segments are dropped (Humpback: 600)."})
    max_chars: int = field(default=3000, metadata={"help": "Longer segments are dropped (Humpback: 3,000)."})
    drop_uppercase_headers: bool = field(default=True, metadata={"help": "Drop segments under all-capitals headers."})
    navigation_headers: list[str] = field(
        default_factory=lambda: [
            "advertisement",
            "forum",
            "quick link",
            "free newsletter",
            "navigation",
            "menu",
            "related post",
            "share this",
            "comments",
            "categories",
            "archives",
            "subscribe",
            "follow us",
            "sidebar",
        ],
        metadata={
            "help": "Headers that are one of these phrases as a whole (numbers aside, plurals allowed) are site "
            'navigation: dropped. "Menu planning" is not "menu".'
        },
    )
    repeated_sentence_jaccard: float = field(
        default=0.8,
        metadata={"help": "Drop a segment when two of its sentences have word-trigram Jaccard at least this."},
    )


@dataclass
class PrepareConfig:
    """Rules applied to each document before any prompt (see `generation/corpus/prepare.py`)."""

    escape_markers: bool = field(
        default=True,
        metadata={"help": "Escape the prompts' markers ([INST], [RES], Score: lines, chat tokens) in prompts."},
    )
    markers: list[str] = field(
        default_factory=lambda: list(DEFAULT_MARKERS), metadata={"help": "The markers escaped in prompts."}
    )
    control_characters: str = field(default="strip", metadata={"help": "NUL and other controls: strip | reject."})
    html: str = field(default="strip", metadata={"help": "HTML left in the text: strip | keep | reject."})
    max_document_chars: int = field(default=100_000, metadata={"help": "Longer documents are cut or rejected."})
    oversize: str = field(
        default="truncate", metadata={"help": "Documents over max_document_chars: truncate | reject."}
    )
    min_document_chars: int = field(default=1, metadata={"help": "Shorter documents (after cleaning) are rejected."})
    dedup: bool = field(
        default=True, metadata={"help": "Reject documents whose cleaned text repeats an earlier one (duplicate_text)."}
    )
    context_tokens: int | None = field(
        default=None,
        metadata={
            "help": "The models' context length: a document must fit every stage of the run that sends it, its "
            "prompt (with room for the longest instruction kept, backtranslate.max_instruction_chars, where the "
            "prompt holds one) "
            "plus the stage's sampling.max_tokens plus context_margin. Counted with each stage's tokenizer when "
            "set, else chars_per_token. What does not fit is handled by context_overflow, before any request."
        },
    )
    context_overflow: str = field(
        default="reject",
        metadata={
            "help": "A document that does not fit: reject (exceeds_context, naming the stage; BAFT keeps whole "
            "documents and drops the others) or cut (its beginning kept, flag truncated_to_context:OLD->NEW_chars)."
        },
    )
    context_margin: int = field(default=16, metadata={"help": "Tokens kept free besides the prompt and the reply."})


@dataclass
class CacheConfig:
    """The request cache (`run/cached_replies.py`): each reply that came back whole, stored under what decides
    it (the served model, the whole request), so a run with an edited config asks only what changed."""

    path: str | None = field(
        default=None,
        metadata={
            "help": "The cache's folder (shared by every run that names it; a shared filesystem serves a Ray "
            "cluster); unset: $BFT_REQUEST_CACHE, else $BFT_CACHE/requests, else ~/.cache/bft/requests."
        },
    )
    mode: Literal["on", "off", "read-only"] = field(
        default="on",
        metadata={
            "help": "on: answer from the cache what it holds and store each new reply; read-only: answer from it, "
            "store nothing; off: ask everything (a sampled reply is stored once: for new samples set a seed or "
            "use off)."
        },
    )


@dataclass
class RayConfig:
    """`--executor ray`: where the Ray cluster is and how the corpus is split over its actors."""

    address: str | None = field(
        default=None,
        metadata={
            "help": "Ray cluster address (`ray start --head` prints it; 'auto' joins the cluster this machine "
            "is part of); unset: $RAY_ADDRESS, else a local cluster on this machine."
        },
    )
    actors: int | None = field(
        default=None,
        metadata={
            "help": "Actors running the stage engine (each on several blocks at once); unset: one per "
            "endpoint, as many as the cluster's CPUs allow."
        },
    )
    actor_cpus: float = field(
        default=0.5, metadata={"help": "CPUs Ray reserves for each actor (requests are I/O: half a core is ample)."}
    )
    block_size: int = field(
        default=1000,
        metadata={
            "help": "Corpus records per block: the unit an actor takes, writes and a rerun skips. Changed in an "
            "output folder, it sets the earlier run aside."
        },
    )


@dataclass
class GenerateConfig:
    """A whole `bft generate` run."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    out: str = field(default="", metadata={"help": "Output directory."})
    stages: list[str] = field(default_factory=lambda: list(STAGES), metadata={"help": "Stages to run, in order."})
    endpoints: list[str] = field(
        default_factory=list, metadata={"help": "Endpoint URLs; empty starts the embedded SmolLM2 server."}
    )
    token_env: str = field(default="HF_TOKEN", metadata={"help": "Environment variable holding the endpoint token."})
    request_timeout: float = field(
        default=300.0,
        metadata={
            "help": "Seconds of silence before a request is abandoned: nothing heard on it, nor on any other "
            "request to the same endpoint. A slow reply that streams, or waits its turn on a busy server, is "
            "never cut for its length."
        },
    )
    stream: bool = field(
        default=True,
        metadata={
            "help": "Stream replies on OpenAI-compatible routes (SSE), so each token is heard as it comes; false "
            "asks for whole replies (TGI's /generate always does)."
        },
    )
    max_retries: int = field(default=5, metadata={"help": "Retries of a failed request (429, 5xx, connection errors)."})
    retry_failed: bool = field(
        default=True,
        metadata={
            "help": "A rerun sends again the documents an earlier run lost to transient failures "
            "(`request_failed`: retries used up); false keeps them rejected."
        },
    )
    truncate_to_fit: bool = field(
        default=True,
        metadata={
            "help": "When a server refuses a prompt as longer than the model's context (HTTP 422), cut the "
            "document to fit and retry once; false rejects the document at once."
        },
    )
    chars_per_token: float = field(
        default=3.0,
        metadata={
            "help": "Characters per token assumed when cutting a document to fit and neither a tokenizer nor "
            "the server's error says more (low is safe: cuts more)."
        },
    )
    dead_after: int = field(
        default=3,
        metadata={
            "help": "Consecutive connection failures, timeouts or 502-504s that take an endpoint out of rotation."
        },
    )
    probe_interval: float = field(
        default=5.0, metadata={"help": "Seconds between health probes of an endpoint out of rotation."}
    )
    endpoints_down_timeout: float = field(
        default=600.0,
        metadata={"help": "Seconds a stage may have no live endpoint before the run stops (a run never hangs)."},
    )
    note: str = field(
        default="", metadata={"help": "Free text copied into the dataset card (e.g. why thresholds were relaxed)."}
    )
    check_language: bool = field(
        default=True,
        metadata={"help": "Reject instructions and rewrites not in the document's language (reply_other_language)."},
    )
    check_prompt_echo: bool = field(
        default=True, metadata={"help": "Reject replies that repeat the prompt's own text (reply_repeats_prompt)."}
    )
    executor: str = field(
        default="local",
        metadata={
            "help": "local: one process streams the corpus; ray: blocks of it on a Ray cluster's actors "
            "(needs bft[ray]). Changed in an output folder, it sets the earlier run aside."
        },
    )
    ray: RayConfig = field(default_factory=RayConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    backtranslate: BacktranslateConfig = field(default_factory=BacktranslateConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)

    def validate(self) -> None:
        unknown = [s for s in self.stages if s not in ALL_STAGES]
        if unknown or not self.stages:
            raise ConfigError(f"stages: unknown {unknown or 'empty list'}; choose from {list(ALL_STAGES)}")
        if "distill" in self.stages:
            if self.stages != ["distill"]:
                raise ConfigError("stages: distill runs alone, over the curated pairs of an earlier bft output")
            return self._validate_settings()
        order = [STAGES.index(s) for s in self.stages]
        if order != sorted(order) or len(set(order)) != len(order):
            raise ConfigError(f"stages: {self.stages} must be in pipeline order {list(STAGES)} without repeats")
        if order[0] == 2:
            raise ConfigError("stages: a run starts with backtranslate, or with curate to re-score an existing pool")
        self._validate_settings()

    def _validate_settings(self) -> None:
        for name in ALL_STAGES:
            stage = self.stage(name)
            if stage.mode not in ("chat", "raw"):
                raise ConfigError(f"{name}.mode: {stage.mode!r} is not 'chat' or 'raw'")
            if stage.raw_format not in ("llama2", "chat_template"):
                raise ConfigError(f"{name}.raw_format: {stage.raw_format!r} is not 'llama2' or 'chat_template'")
            if stage.prefill and stage.mode != "raw":
                raise ConfigError(
                    f"{name}.prefill needs mode: raw (a chat endpoint cannot continue a prefilled answer)"
                )
            if isinstance(stage.max_concurrency, int) and stage.max_concurrency < 1:
                raise ConfigError(f"{name}.max_concurrency must be at least 1")
            if not stage.sampling.temperature >= 0:
                raise ConfigError(f"{name}.sampling.temperature must be >= 0")
            if not 0 < stage.sampling.top_p <= 1:
                raise ConfigError(f"{name}.sampling.top_p must be in (0, 1]")
            if stage.sampling.max_tokens < 1:
                raise ConfigError(f"{name}.sampling.max_tokens must be at least 1")
        if self.curate.score_mode not in ("parsed", "expected"):
            raise ConfigError(f"curate.score_mode: {self.curate.score_mode!r} is not 'parsed' or 'expected'")
        if not 1 <= self.curate.threshold <= 5:
            raise ConfigError("curate.min_score must be in 1-5")
        if not 1 <= self.curate.top_n_tokens <= 20:
            raise ConfigError("curate.top_n_tokens must be in 1-20")
        if not 1 <= self.curate.samples <= 16:
            raise ConfigError("curate.samples must be in 1-16")
        if self.chars_per_token <= 0:
            raise ConfigError("chars_per_token must be positive")
        if self.dead_after < 1:
            raise ConfigError("dead_after must be at least 1")
        if self.request_timeout <= 0 or self.probe_interval <= 0 or self.endpoints_down_timeout <= 0:
            raise ConfigError("request_timeout, probe_interval and endpoints_down_timeout must be positive")
        if self.corpus.limit is not None and self.corpus.limit < 1:
            raise ConfigError("corpus.limit must be at least 1")
        for where, value, allowed in (
            ("corpus.duplicate_ids", self.corpus.duplicate_ids, ("error", "rename")),
            ("corpus.invalid_utf8", self.corpus.invalid_utf8, ("reject", "replace", "error")),
            ("corpus.malformed_lines", self.corpus.malformed_lines, ("reject", "error")),
            ("corpus.invalid_unicode", self.corpus.invalid_unicode, ("reject", "replace")),
            ("prepare.context_overflow", self.prepare.context_overflow, ("reject", "cut")),
            ("prepare.control_characters", self.prepare.control_characters, ("strip", "reject")),
            ("prepare.html", self.prepare.html, ("strip", "keep", "reject")),
            ("prepare.oversize", self.prepare.oversize, ("truncate", "reject")),
        ):
            if value not in allowed:
                raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"executor: {self.executor!r} is not 'local' or 'ray'")
        if self.ray.block_size < 1 or (self.ray.actors is not None and self.ray.actors < 1):
            raise ConfigError("ray.block_size and ray.actors must be at least 1")
        if self.ray.actor_cpus < 0:
            raise ConfigError("ray.actor_cpus must not be negative")
        if self.segment.mode not in ("none", "headers"):
            raise ConfigError(f"segment.mode: {self.segment.mode!r} is not 'none' or 'headers'")
        if not 0 < self.segment.min_chars <= self.segment.max_chars:
            raise ConfigError("segment.min_chars must be positive and at most segment.max_chars")
        if self.prepare.max_document_chars < 100 or self.corpus.max_record_bytes < 1024:
            raise ConfigError("prepare.max_document_chars must be >= 100 and corpus.max_record_bytes >= 1024")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from nested dicts; unknown keys and wrong types raise `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; known: {sorted(fields)}")
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # the first type the value fits (`int | Literal["auto"]`)
            try:
                return _coerce(option, value, where)
            except ConfigError:
                continue
        return _coerce(inner[-1], value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


SHIPPED_CONFIGS = Path(__file__).parent / "configs"  # baft.yaml, humpback.yaml: `--config baft`


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def find_config(name: str) -> Path:
    """A run config: `name` as a file, else a shipped config of that name (`baft`, `humpback`)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / f"{name.removesuffix('.yaml')}.yaml"
    if "/" not in name and shipped.is_file():
        return shipped
    close = difflib.get_close_matches(path.stem, shipped_configs(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"config {name!r}: no such file, and not a shipped config ({', '.join(shipped_configs())}){hint}")


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> GenerateConfig:
    """Read a YAML run config (optional), apply CLI overrides (dotted keys), validate."""
    data: dict[str, Any] = {}
    if path:
        path = find_config(str(path))
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        config = from_dict(GenerateConfig, data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from None
    config.validate()
    return config


def dump_config(config: GenerateConfig, path: Path, redact=None) -> None:
    """Write the resolved config as YAML; `redact(url)` hides credentials in endpoint URLs."""
    data = config.to_dict()
    if redact is not None:
        data["endpoints"] = [redact(u) for u in data["endpoints"]]
        for stage in ALL_STAGES:
            data[stage]["endpoints"] = [redact(u) for u in data[stage]["endpoints"]]
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
