"""Replies answered from the request cache, and the replies a run stores in it.

A reply is a fact about a request: the same model asked the same thing gives it. So each reply that came
back whole is stored (`run/request_cache.py`) under a key made of what decides it, and nothing else:

- **the model the stage's endpoints serve**: on TGI the id and revision its `/info` reports (the request's
  `model` field is ignored there); on OpenAI-compatible servers the `model` the request names (it picks the
  model: `transformers serve` loads whichever is named), else the one `/v1/models` lists, and the revision
  where the server says; for a model served from a folder on this machine, which has no revision, its files'
  names, sizes and times (`local_revision`); and the API route (TGI `/generate` or OpenAI's), which decides
  how the server reads the prompt;
- **the whole request**: chat or raw, the text after templating, escaping and prefill, every sampling
  parameter (`temperature`, `top_p`, `max_tokens`, `stop`, `seed`, and `stop_on_repeat` when set: the stored
  reply is the one bft cut), and the sample's number when a stage asks several (`curate.samples`).

Not in the key: the endpoint's URL (the same model on another host answers the same), a threshold, a filter,
the stage's place in the run, the output folder. A changed `min_score` therefore asks nothing; a changed
prompt or sampling asks that stage again, and the later stages only for the documents whose input changed.

Token probabilities (`score_mode: expected`) are not in the key: a stored reply carries the number of
alternatives it was asked for (`top_n`) and answers a request for as many or fewer (trimmed to what a fresh
reply would have held); a request for more is asked again, and its reply stored over the poorer one.

A prompt refused as longer than the context (`input_too_long`, by the server or by bft's count before
sending) is stored too, with the context limits the endpoint declared; it is replayed only while those
limits are the same, so the document is cut to the same length without asking again.

A sampled reply (temperature above 0, no seed) is stored once and is then the reply: a rerun reads the
same sample. For new samples, set a seed or run with `--no-cache`.

A cached reply's provenance names the server that first gave it: its kind, the version it said of itself and,
for a server bft started, the engine arguments it passed (an entry stored before these were kept has none).

A run opens the cache it answers from with `open_replies` (`cache.mode`), in `cache_folder`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bft.generation.config import GenerateConfig, SamplingConfig
from bft.generation.endpoints.failures import VALIDATION_RE
from bft.generation.errors import RequestRejected
from bft.generation.method.stages import Request, Stage
from bft.generation.reasons import INPUT_TOO_LONG
from bft.generation.records import Generation, TokenChoice
from bft.generation.run.request_cache import RequestCache, default_cache_dir

KEY_VERSION = 1  # raise when what a request means changes (a new field that decides the reply)
REFUSALS_STORED = {INPUT_TOO_LONG}  # refusals that depend only on the request and the declared context


@dataclass
class CachedEndpoint:
    """Where a cached reply came from, for the record's provenance (the endpoint that first answered)."""

    name: str
    model_id: str | None
    model_revision: str | None
    api: str | None
    server_kind: str | None
    version: str | None  # the version that server said of itself (None: it said none, or an entry stored before)
    server_args: str | None  # a server bft started: the engine arguments it passed
    first_asked_at: str
    first_asked_endpoint: str | None
    first_asked_run: str | None
    cached: bool = True


def served_model(stage: Stage, endpoint) -> tuple[str | None, str | None, str | None]:
    """(model, revision, api) of what `endpoint` serves to `stage` (see the module docstring)."""
    model = endpoint.model_id if endpoint.api == "tgi" else (stage.config.model or endpoint.model_id)
    revision = endpoint.model_revision or local_revision(getattr(endpoint, "model_root", None) or model)
    return model, revision, endpoint.api


def local_revision(model: str | None) -> str | None:
    """A model served from a folder on this machine has no revision; its files' names, sizes and times stand
    for one, so a model trained again into the same folder (`bft train`, Humpback's next round) is asked
    anew instead of answered with its predecessor's replies. None for anything that is not such a folder."""
    folder = Path(model) if model else None
    if folder is None or not folder.is_absolute() or not folder.is_dir():
        return None
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return "files:" + hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


def request_key(model: object, request: Request, sampling: dict, sample: int = 0) -> str:
    """The cache key of one request: sha256 of what decides its reply (the module docstring says what)."""
    decided_by = {
        "v": KEY_VERSION,
        "model": model,
        "mode": request.mode,
        "text": request.text,
        "sampling": sampling,
        "sample": sample,
    }
    return hashlib.sha256(json.dumps(decided_by, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def sampling_key(sampling: SamplingConfig) -> dict:
    """The sampling settings as the key holds them: every field, but a hang-up on repeats only when asked
    (`stop_on_repeat` came after the cache; left out at 0 so the replies stored before it still answer)."""
    fields = asdict(sampling)
    if not fields.get("stop_on_repeat"):
        fields.pop("stop_on_repeat", None)
    return fields


class ReplyCache:
    """The engine's view of the request cache: keys for a stage's requests, hits, and what to store."""

    def __init__(self, store: RequestCache, run: str):
        self.store = store
        self.run = run
        self._decided: dict[str, tuple[object, dict]] = {}  # stage -> its pool's model identity, its sampling

    def key(self, stage: Stage, request: Request, sample: int, endpoints: list) -> str:
        """The key of `request` from `stage` (sample number `sample`), sent to one of `endpoints`. A stage's
        model and sampling are the same for the whole run: worked out at its first request."""
        decided = self._decided.get(stage.name)
        if decided is None:
            # one identity for the pool: every member's, when they differ (a reply of either would not do)
            served = sorted({served_model(stage, endpoint) for endpoint in endpoints}, key=str)
            model = list(served[0]) if len(served) == 1 else [list(s) for s in served]
            decided = self._decided[stage.name] = (model, sampling_key(stage.sampling))
        return request_key(decided[0], request, decided[1], sample)

    def lookup(
        self, key: str, request: Request, endpoints: list
    ) -> tuple[Generation, CachedEndpoint] | RequestRejected | None:
        """The stored reply to the request, as a fresh server would have given it; the stored refusal of a
        prompt, while the endpoints declare the same context as the one that refused it; None: ask."""
        entry = self.store.get(key)
        if entry is None:
            return None
        if entry.get("kind") == "refused":
            if entry.get("limits") != _limits(endpoints[0]) or VALIDATION_RE.search(entry.get("detail") or ""):
                return None  # another context; or a schema refusal earlier bft misread as too long: ask again
            return RequestRejected(entry["reason"], entry["detail"])
        wanted = request.top_n or 0
        if wanted > entry.get("top_n", 0):
            return None
        generation = _generation(entry["generation"], wanted)
        source = CachedEndpoint(
            name=entry.get("endpoint") or "cache",
            model_id=entry.get("model_id"),
            model_revision=entry.get("model_revision"),
            api=entry.get("api"),
            server_kind=entry.get("server"),
            version=entry.get("server_version"),
            server_args=entry.get("server_args"),
            first_asked_at=entry.get("asked_at", ""),
            first_asked_endpoint=entry.get("endpoint"),
            first_asked_run=entry.get("run"),
        )
        return generation, source

    def close(self) -> None:
        self.store.close()

    def remember(self, key: str, request: Request, generation: Generation, endpoint) -> None:
        """Store a reply that came back whole."""
        asked = (request.top_n or 0) if generation.token_choices is not None else 0
        self.store.put(
            key, {"kind": "reply", "top_n": asked, "generation": asdict(generation), **self._where(endpoint)}
        )

    def remember_refusal(self, key: str, error: RequestRejected, endpoint) -> None:
        """Store a refusal that depends only on the request and the endpoint's declared context."""
        if error.reason not in REFUSALS_STORED or endpoint is None:
            return
        self.store.put(
            key,
            {
                "kind": "refused",
                "reason": error.reason,
                "detail": error.detail,
                "limits": _limits(endpoint),
                **self._where(endpoint),
            },
        )

    def _where(self, endpoint) -> dict:
        return {
            "model_id": endpoint.model_id,
            "model_revision": endpoint.model_revision,
            "api": endpoint.api,
            "server": endpoint.server_kind,
            "server_version": getattr(endpoint, "version", None),  # (a batch's source has none)
            "server_args": getattr(endpoint, "server_args", None),
            "endpoint": endpoint.name,
            "run": self.run,
            "asked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def _limits(endpoint) -> list:
    return [getattr(endpoint, "max_input_tokens", None), getattr(endpoint, "max_total_tokens", None)]


def _generation(stored: dict, top_n: int) -> Generation:
    """The stored reply with as many alternatives per token as a request for `top_n` would get."""
    choices = stored.get("token_choices")
    stored = {**stored, "token_choices": None}
    if top_n and choices is not None:
        stored["token_choices"] = [TokenChoice(c["text"], [tuple(t) for t in c["top"][:top_n]]) for c in choices]
    return Generation(**stored)


def open_replies(config: GenerateConfig) -> ReplyCache | None:
    """The request cache the run answers from and stores in (`cache.mode`), or None when it is off."""
    if config.cache.mode == "off":
        return None
    return ReplyCache(RequestCache(cache_folder(config), config.cache.mode), run=str(Path(config.out).resolve()))


def cache_folder(config: GenerateConfig) -> Path:
    """The request cache's folder: `cache.path`, else the default (`request_cache.default_cache_dir`)."""
    return Path(config.cache.path or default_cache_dir()).expanduser().resolve()
