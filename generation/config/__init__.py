"""Run configuration: typed, documented dataclasses shared by the CLI, YAML files and the docs.

A run config is one YAML file whose keys mirror these dataclasses (see `generation/demo/demo.yaml`
and the README's "Run configuration"). Each field is declared once here, with its type, default and
help (`metadata["help"]`), as TRL's configs are; the rest is read from it:

- `choices.py`: an enum-like field is typed `Literal[...]`, and that type is its one list of choices,
  checked when the settings are made (`Checked`), whatever made them;
- `coerce.py`: YAML mappings into these dataclasses; unknown keys and wrong types are errors that name
  the key;
- `checks.py`: the rules that span fields or bound numbers (stage order, score ranges, ...);
- `files.py`: the YAML files: shipped configs by name, loading with command-line overrides, and the
  resolved config written next to the output so that a run can be reproduced;
- `flags.py`: command-line flags whose type, choices, stated default and help come from these fields.

Defaults follow the papers: nucleus sampling with T=1.0 and p=0.9 for every stage (BAFT sec. 3), keep
only curation score 5 (BAFT; Humpback's A_5), prompts P1-P3 verbatim, chat requests.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from bft.generation.config.choices import Checked

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
# The stages a run may name (`stages`, `--stage-endpoint`): the pipeline in its order, then BAFT's distill baseline,
# which runs alone, over the curated pairs of an earlier output.
StageName = Literal["backtranslate", "curate", "rewrite", "distill"]
CacheMode = Literal["on", "off", "read-only"]  # the request cache's (`run/request_cache.py`)
ServeEngine = Literal["vllm", "sglang"]  # the engines bft starts itself (`endpoints/engines.py`)
ServeOrder = Literal["together", "in_turn"]  # the servers of every stage at once, or stage by stage
BatchApi = Literal["openai", "anthropic", "vllm"]  # the batch APIs a stage can send through (`endpoints/batches/`)
SendMode = Literal["live", "batch"]  # how a stage's requests go out: one by one, or in provider batches
ALL_STAGES: tuple[StageName, ...] = typing.get_args(StageName)
STAGES: tuple[StageName, ...] = tuple(stage for stage in ALL_STAGES if stage != "distill")  # the pipeline, in order


@dataclass
class SamplingConfig(Checked):
    """Decoding parameters sent with every request of a stage."""

    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (papers: 1.0)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling p (papers: 0.9)."})
    max_tokens: int = field(default=1024, metadata={"help": "Most tokens the model may generate."})
    stop: list[str] = field(default_factory=list, metadata={"help": "Stop sequences."})
    seed: int | None = field(default=None, metadata={"help": "Sampling seed, when the server honours one."})
    stop_on_repeat: int = field(
        default=0,
        metadata={
            "help": "Hang up once the reply repeats one of its own sentences or lines of at least this many "
            "characters (a small model looping); the reply is the text before the repeat, finish stop. "
            "Not sent to the server. 0: never."
        },
    )


@dataclass
class ServeConfig(Checked):
    """Model servers bft starts itself for the run (`run/servers.py`), stops when it ends, and sends to.

    The run's `serve` applies to every stage that names no endpoints of its own; a stage's own `serve` takes
    the run's settings for the keys it leaves unset (BAFT: one model per stage). Stages whose settings come out
    equal share the same servers.
    """

    engine: ServeEngine | None = field(
        default=None, metadata={"help": "Start this engine's OpenAI-compatible server; unset: start none."}
    )
    model: str = field(default="", metadata={"help": "The model it serves: a local folder or a Hub id."})
    name: str = field(
        default="",
        metadata={"help": "The model's served name (the stages' model); unset: the Hub id, or a folder's name."},
    )
    python: str = field(
        default="",
        metadata={"help": "The Python that has the engine installed (e.g. .venv-vllm/bin/python); unset: bft's own."},
    )
    args: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Engine arguments passed through as given (--tensor-parallel-size 4, --max-model-len 8192, "
            "--dtype bfloat16, ...); an item with spaces is split as a shell would (the flag: "
            "--serve-arg='--max-model-len 8192', with '=' since the value starts with '--')."
        },
    )
    replicas: int | None = field(
        default=None,
        metadata={
            "help": "Replicas to start; unset: one per group of GPUs a replica takes (the product of the parallel "
            "sizes in args) among the visible GPUs, shared out between differing servers, or one on the CPU."
        },
    )
    startup_timeout: float | None = field(
        default=None, metadata={"help": "Seconds a replica may take to become ready; unset: 900."}
    )
    max_restarts: int | None = field(
        default=None,
        metadata={
            "help": "Times a replica that exits mid-run is restarted (same port and arguments; its requests are "
            "retried meanwhile) before the run stops naming its log; unset: 3."
        },
    )
    order: ServeOrder | None = field(
        default=None,
        metadata={
            "help": "together: every stage's servers at once; in_turn: the stages' models one after another on the "
            "same GPUs (start the first stage's servers, run every document through it, stop them, start the next "
            "stage's, ...). A run setting, not a stage's; unset: together."
        },
    )


@dataclass
class BatchConfig(Checked):
    """A stage's requests sent as provider batches (`send: batch`): written to request files, submitted,
    polled, downloaded and fed through the same parsing, journals and provenance as live requests
    (`run/batching.py`). A run stopped while batches are pending resumes them by id."""

    api: BatchApi = field(
        default="openai",
        metadata={
            "help": "openai: /v1/files + /v1/batches (OpenAI and the providers that copy its format); anthropic: "
            "/v1/messages/batches; vllm: vLLM's offline run_batch on this machine (no server)."
        },
    )
    url: str = field(
        default="",
        metadata={
            "help": "The provider's base URL; unset: the API's own (https://api.openai.com, https://api.anthropic.com)."
        },
    )
    token_env: str = field(
        default="",
        metadata={"help": "Environment variable holding the API key; unset: OPENAI_API_KEY or ANTHROPIC_API_KEY."},
    )
    max_requests: int | None = field(
        default=None,
        metadata={
            "help": "Most requests in one batch; unset: the provider's limit (OpenAI 50,000; Anthropic 100,000)."
        },
    )
    max_bytes: int | None = field(
        default=None,
        metadata={
            "help": "Largest request file of one batch; unset: the provider's limit (OpenAI 200 MB; Anthropic 256 MB)."
        },
    )
    completion_window: str = field(default="24h", metadata={"help": "OpenAI: the batch's completion window."})
    poll_interval: float = field(
        default=30.0, metadata={"help": "Seconds between the first status checks; grows to poll_max."}
    )
    poll_max: float = field(default=300.0, metadata={"help": "Longest wait between status checks, in seconds."})
    python: str = field(
        default="", metadata={"help": "api vllm: the Python with vLLM installed (e.g. .venv-vllm/bin/python)."}
    )
    model_path: str = field(default="", metadata={"help": "api vllm: the model folder or Hub id run_batch loads."})
    args: list[str] = field(
        default_factory=list, metadata={"help": "api vllm: run_batch's own arguments, passed through."}
    )


@dataclass
class PriceConfig(Checked):
    """What a stage's model costs, per million tokens, to put a price on a run (`run/money.py`): shown by
    `--dry-run`, on the progress bars as it is spent, in stats.json and on the card. Replies the request
    cache answers cost nothing."""

    input: float = field(default=0.0, metadata={"help": "Price of a million prompt tokens."})
    output: float = field(default=0.0, metadata={"help": "Price of a million completion tokens."})
    batch_discount: float = field(
        default=0.5,
        metadata={
            "help": "Fraction of the price a batch request costs (`send: batch`); providers sell batches at half."
        },
    )
    currency: str = field(default="USD", metadata={"help": "The currency of the prices, as printed."})


@dataclass
class StageConfig(Checked):
    """How one stage talks to its model.

    `mode: chat` sends the prompt (without the Llama-2 `[INST]` wrapper) as the user turn to
    `/v1/chat/completions`; the server applies the model's chat template. `mode: raw` sends the prompt
    text itself to TGI's `/generate` or an OpenAI-compatible `/v1/completions`: either the papers'
    literal `[INST] ... [/INST]` form (`raw_format: llama2`) or the user turn wrapped by the model's own
    chat template on the client (`raw_format: chat_template`, needs `tokenizer`). In raw mode an answer
    `prefill` is appended to the prompt and counted as the start of the reply.
    """

    mode: Literal["chat", "raw"] = field(
        default="chat",
        metadata={"help": "chat: the user turn to /v1/chat/completions; raw: the prompt text itself (see above)."},
    )
    raw_format: Literal["llama2", "chat_template"] = field(
        default="llama2",
        metadata={"help": "Raw prompts: the papers' [INST] form (llama2) or the model's own chat template."},
    )
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
            "help": "Requests in flight per endpoint: auto finds each endpoint's best load by itself "
            "(endpoints/limiter.py); a number fixes it. One limit per endpoint, shared by the stages that send "
            "there (the largest number any of them sets)."
        },
    )
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    serve: ServeConfig | None = field(
        default=None,
        metadata={"help": "This stage's own servers (see ServeConfig); the keys it leaves unset are the run's serve."},
    )
    send: SendMode = field(
        default="live",
        metadata={"help": "live: requests to the endpoints one by one; batch: provider batches (see BatchConfig)."},
    )
    batch: BatchConfig = field(default_factory=BatchConfig)
    price: PriceConfig | None = field(
        default=None, metadata={"help": "What the stage's model costs per million tokens; unset: not priced."}
    )


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

    score_mode: Literal["parsed", "expected"] = field(
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
class CorpusConfig(Checked):
    """Where documents come from."""

    path: str = field(
        default="", metadata={"help": "Local .jsonl/.jsonl.gz/.parquet file or folder, or a Hub dataset id."}
    )
    text_field: str = field(default="text", metadata={"help": "Column holding the document text."})
    id_field: str = field(default="id", metadata={"help": "Column holding the document id."})
    split: str = field(default="train", metadata={"help": "Hub datasets: split to stream."})
    revision: str | None = field(default=None, metadata={"help": "Hub datasets: revision (tag, branch or commit)."})
    limit: int | None = field(default=None, metadata={"help": "Read at most this many documents."})
    duplicate_ids: Literal["error", "rename"] = field(
        default="error",
        metadata={
            "help": "A document id seen twice: error (stop, naming both records) or rename (the later one "
            "becomes ID#2, ID#3, ... and is flagged duplicate_id)."
        },
    )
    invalid_utf8: Literal["reject", "replace", "error"] = field(
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
    invalid_unicode: Literal["reject", "replace"] = field(
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
class SegmentConfig(Checked):
    """Humpback's header segments (see `generation/corpus/segments.py`); off unless `mode: headers`."""

    mode: Literal["none", "headers"] = field(
        default="none",
        metadata={"help": "none: whole documents (BAFT); headers: the text under each HTML header (Humpback)."},
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
class PrepareConfig(Checked):
    """Rules applied to each document before any prompt (see `generation/corpus/prepare.py`)."""

    escape_markers: bool = field(
        default=True,
        metadata={"help": "Escape the prompts' markers ([INST], [RES], Score: lines, chat tokens) in prompts."},
    )
    markers: list[str] = field(
        default_factory=lambda: list(DEFAULT_MARKERS), metadata={"help": "The markers escaped in prompts."}
    )
    control_characters: Literal["strip", "reject"] = field(
        default="strip",
        metadata={"help": "NUL and other control characters: removed (strip) or the document rejected."},
    )
    html: Literal["strip", "keep", "reject"] = field(
        default="strip", metadata={"help": "HTML left in the text: removed (strip), kept, or the document rejected."}
    )
    max_document_chars: int = field(default=100_000, metadata={"help": "Longer documents are cut or rejected."})
    oversize: Literal["truncate", "reject"] = field(
        default="truncate", metadata={"help": "Documents over max_document_chars: cut to it (truncate) or rejected."}
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
    context_overflow: Literal["reject", "cut"] = field(
        default="reject",
        metadata={
            "help": "A document that does not fit: reject (exceeds_context, naming the stage; BAFT keeps whole "
            "documents and drops the others) or cut (its beginning kept, flag truncated_to_context:OLD->NEW_chars)."
        },
    )
    context_margin: int = field(default=16, metadata={"help": "Tokens kept free besides the prompt and the reply."})


@dataclass
class CacheConfig(Checked):
    """The request cache (`run/cached_replies.py`): each reply that came back whole, stored under what decides
    it (the served model, the whole request), so a run with an edited config asks only what changed."""

    path: str | None = field(
        default=None,
        metadata={
            "help": "The cache's folder (shared by every run that names it; a shared filesystem serves a Ray "
            "cluster); unset: $BFT_REQUEST_CACHE, else $BFT_CACHE/requests, else ~/.cache/bft/requests."
        },
    )
    mode: CacheMode = field(
        default="on",
        metadata={
            "help": "on: answer from the cache what it holds and store each new reply; read-only: answer from it, "
            "store nothing; off: ask everything (a sampled reply is stored once: for new samples set a seed or "
            "use off)."
        },
    )


@dataclass
class RayConfig(Checked):
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
class GenerateConfig(Checked):
    """A whole `bft generate` run."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    out: str = field(default="", metadata={"help": "Output folder (rerun with the same folder to resume)."})
    stages: list[StageName] = field(
        default_factory=lambda: list(STAGES),
        metadata={
            "help": "Stages to run, in pipeline order; a run may start with curate to re-score an earlier pool, and "
            "distill runs alone."
        },
    )
    endpoints: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Endpoint URLs of every stage that names none of its own (given on the command line, they "
            "replace the stages' own too); none at all, and no serve, starts the embedded SmolLM2 server."
        },
    )
    serve: ServeConfig = field(default_factory=ServeConfig)
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
    executor: Literal["local", "ray"] = field(
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
        """The settings of stage `name` (one of `ALL_STAGES`)."""
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
