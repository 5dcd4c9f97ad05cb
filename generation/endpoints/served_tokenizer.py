"""The tokenizer of the model an endpoint serves, for stages that apply the chat template themselves.

`raw_format: chat_template` wraps each prompt in the model's own chat template before sending it raw (the
demo's setting for a small model), so bft needs that model's tokenizer. With the embedded server bft knows
it. With `--endpoint` it asks the server which model it serves, where the server says where the model came
from: vLLM and SGLang name it in `/v1/models` (`root`: the path or Hub id given to `--model`, whatever
`--served-model-name` says), `transformers serve` by its id, TGI in `/info` (`model_id`). The first of those
that is a folder on this machine, or a Hub id whose tokenizer is already in the local cache, is the stage's
tokenizer: nothing is downloaded to find out, and nothing is guessed. When none is, the stage's `tokenizer`
must be set, and the error says what it takes and what the server named.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from bft.generation.endpoints.transport import base_url, redact_url
from bft.generation.errors import ConfigError

TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def served_models(url: str, token: str | None = None, timeout: float = 10.0) -> list[str]:
    """What the server at `url` says it serves, most telling first: vLLM/SGLang `root` before `id`, TGI's
    `model_id`. Empty when it says nothing (or cannot be reached: the run's own probe reports that)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    names: list[str] = []
    for route in ("/v1/models", "/info"):
        request = urllib.request.Request(base_url(url) + route, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = json.loads(response.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            continue
        if not isinstance(body, dict):
            continue
        cards = body.get("data") if isinstance(body.get("data"), list) else []
        for card in cards[:1]:
            if isinstance(card, dict):
                names += [card[key] for key in ("root", "id") if isinstance(card.get(key), str)]
        if isinstance(body.get("model_id"), str):
            names.append(body["model_id"])
        if names:
            break
    return list(dict.fromkeys(names))


def loadable_here(name: str) -> bool:
    """Whether `name` is a tokenizer this machine has: a folder holding one, or a Hub id in the local cache."""
    if any((Path(name) / file).is_file() for file in TOKENIZER_FILES):
        return True
    if name.count("/") != 1 or Path(name).exists():
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        return any(isinstance(try_to_load_from_cache(name, file), str) for file in TOKENIZER_FILES)
    except ValueError:  # not a valid repository id
        return False


def tokenizer_of_endpoint(url: str, stage: str, token: str | None = None) -> str:
    """The tokenizer for `stage` from the model the endpoint at `url` serves; a ConfigError naming what
    `tokenizer` takes when no name the server gives is loadable here."""
    names = served_models(url, token)
    found = next((name for name in names if loadable_here(name)), None)
    if found is not None:
        return found
    said = f"it names {', '.join(repr(n) for n in names)}, which is" if names else "it names no model, and nothing"
    raise ConfigError(
        f"{stage}.raw_format is chat_template, so bft applies the served model's chat template and needs its "
        f"tokenizer; {stage}.tokenizer is not set and the endpoint {redact_url(url)} could not tell it ({said} "
        f"neither a folder here nor a Hub id in the local cache): set {stage}.tokenizer to the served model's "
        "tokenizer, a local folder holding tokenizer_config.json or a Hub id (e.g. HuggingFaceTB/SmolLM2-135M-"
        "Instruct), or use mode: chat to let the server apply it"
    )
