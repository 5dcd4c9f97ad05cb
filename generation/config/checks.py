"""The rules of a run config that no single field's type can say: stage order, bounds, fields that need others.

A field's own choices are its `Literal` type, checked when the settings are made (`choices.py`); what is
left here spans fields (`prefill` needs `mode: raw`, distill runs alone) or bounds a number. `load_config`
runs these after reading a config, before anything is sent.
"""

from __future__ import annotations

from bft.generation.config import ALL_STAGES, STAGES, GenerateConfig
from bft.generation.errors import ConfigError


def check_config(config: GenerateConfig) -> None:
    """Refuse a config no run could follow, with a `ConfigError` naming the key."""
    check_stages(config.stages)
    check_stage_settings(config)
    check_run_settings(config)
    check_batch_settings(config)


def check_stages(stages: list[str]) -> None:
    """The stages: the pipeline's, in order, without repeats, starting with backtranslate or curate; or distill
    alone (over the curated pairs of an earlier output)."""
    if not stages:  # (each one is among ALL_STAGES: the field's type, checked when the config was made)
        raise ConfigError(f"stages: an empty list; choose from {list(ALL_STAGES)}")
    if "distill" in stages:
        if stages != ["distill"]:
            raise ConfigError("stages: distill runs alone, over the curated pairs of an earlier bft output")
        return
    order = [STAGES.index(s) for s in stages]
    if order != sorted(order) or len(set(order)) != len(order):
        raise ConfigError(f"stages: {stages} must be in pipeline order {list(STAGES)} without repeats")
    if stages[0] == "rewrite":
        raise ConfigError("stages: a run starts with backtranslate, or with curate to re-score an existing pool")


def check_stage_settings(config: GenerateConfig) -> None:
    """Every stage's requests, whether it runs or not (a later run of the same config may run it)."""
    for name in ALL_STAGES:
        stage = config.stage(name)
        if stage.prefill and stage.mode != "raw":
            raise ConfigError(f"{name}.prefill needs mode: raw (a chat endpoint cannot continue a prefilled answer)")
        if isinstance(stage.max_concurrency, int) and stage.max_concurrency < 1:
            raise ConfigError(f"{name}.max_concurrency must be at least 1")
        if not stage.sampling.temperature >= 0:
            raise ConfigError(f"{name}.sampling.temperature must be >= 0")
        if not 0 < stage.sampling.top_p <= 1:
            raise ConfigError(f"{name}.sampling.top_p must be in (0, 1]")
        if stage.sampling.max_tokens < 1:
            raise ConfigError(f"{name}.sampling.max_tokens must be at least 1")
        if stage.sampling.stop_on_repeat < 0:
            raise ConfigError(f"{name}.sampling.stop_on_repeat must be 0 (never) or a number of characters")
    if not 1 <= config.curate.threshold <= 5:
        raise ConfigError("curate.min_score must be in 1-5")
    if not 1 <= config.curate.top_n_tokens <= 20:
        raise ConfigError("curate.top_n_tokens must be in 1-20")
    if not 1 <= config.curate.samples <= 16:
        raise ConfigError("curate.samples must be in 1-16")


def check_run_settings(config: GenerateConfig) -> None:
    """The bounds of the run's own numbers: endpoints' timing, the corpus, segments, the Ray executor."""
    if config.chars_per_token <= 0:
        raise ConfigError("chars_per_token must be positive")
    if config.dead_after < 1:
        raise ConfigError("dead_after must be at least 1")
    if config.request_timeout <= 0 or config.probe_interval <= 0 or config.endpoints_down_timeout <= 0:
        raise ConfigError("request_timeout, probe_interval and endpoints_down_timeout must be positive")
    if config.corpus.limit is not None and config.corpus.limit < 1:
        raise ConfigError("corpus.limit must be at least 1")
    if config.ray.block_size < 1 or (config.ray.actors is not None and config.ray.actors < 1):
        raise ConfigError("ray.block_size and ray.actors must be at least 1")
    if config.ray.actor_cpus < 0:
        raise ConfigError("ray.actor_cpus must not be negative")
    if not 0 < config.segment.min_chars <= config.segment.max_chars:
        raise ConfigError("segment.min_chars must be positive and at most segment.max_chars")
    if config.prepare.max_document_chars < 100 or config.corpus.max_record_bytes < 1024:
        raise ConfigError("prepare.max_document_chars must be >= 100 and corpus.max_record_bytes >= 1024")


def check_batch_settings(config: GenerateConfig) -> None:
    """The stages that send by provider batch (`send: batch`): what no batch run can do, refused before anything
    is sent. (What one API cannot send, such as Anthropic's raw prompts, and a missing API key are refused when
    the run opens its batch senders, `run/batching.py`, still before any request.)"""
    for name in config.stages:
        stage = config.stage(name)
        if stage.send != "batch":
            continue
        batch = stage.batch
        if config.executor == "ray":
            raise ConfigError(
                f"{name}.send: batch runs on the local executor only, not executor ray (--executor ray): drop "
                f"--executor ray, or send {name} live"
            )
        engine = (stage.serve.engine if stage.serve is not None else None) or config.serve.engine
        if engine:
            raise ConfigError(
                f"{name}.send: batch sends to {name}.batch.api {batch.api}, so bft would serve {name} for nothing "
                f"(serve.engine {engine}): give the served stages their own serve: and {name} none, or send it live"
            )
        if stage.endpoints:
            raise ConfigError(
                f"{name}.endpoints: {name} has send: batch, which sends to {name}.batch ({batch.api}), not to "
                "endpoints: drop one of them"
            )
        if batch.api in ("openai", "anthropic") and not stage.model:
            raise ConfigError(f"{name}.model: send: batch through {batch.api} needs the model its requests name")
        if batch.api == "vllm" and not (batch.python and batch.model_path):
            raise ConfigError(
                f"{name}.batch: api vllm runs vLLM's run_batch on this machine and needs batch.python (a Python "
                "with vLLM) and batch.model_path (the model folder or Hub id)"
            )
        if not 0 < batch.poll_interval <= batch.poll_max:
            raise ConfigError(f"{name}.batch.poll_interval must be positive and at most {name}.batch.poll_max")
        if (batch.max_requests is not None and batch.max_requests < 1) or (
            batch.max_bytes is not None and batch.max_bytes < 1
        ):
            raise ConfigError(f"{name}.batch.max_requests and max_bytes must be at least 1 when set")
