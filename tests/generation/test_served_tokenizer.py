"""The demo config (`raw_format: chat_template`) pointed at a server: the tokenizer is the served model's."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from bft.generation.cli import main
from tests.paths import DEMO_CONFIG, DEMO_CORPUS
from tests.servers.tgi import TGITestServer

TEMPLATE = (
    "{% for m in messages %}<|turn|>{{ m.role }}\n{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|turn|>assistant\n{% endif %}"
)


@pytest.fixture
def model_folder(tmp_path):
    """A model folder as a server loads it: here only its tokenizer, with a chat template of its own."""
    backend = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(tmp_path / "served-model")
    return tmp_path / "served-model"


def demo_run(tmp_path, server, *extra) -> int:
    args = ["generate", str(DEMO_CORPUS), "--out", str(tmp_path / "o"), "--config", str(DEMO_CONFIG)]
    return main([*args, "--endpoint", server.url, "--stages", "backtranslate", "--limit", "2", "--no-progress", *extra])


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_the_demo_config_takes_the_tokenizer_of_the_model_the_endpoint_serves(tmp_path, capsys, model_folder, flavor):
    with TGITestServer(flavor=flavor, tgi_info=False, model_id="smollm2") as server:  # --served-model-name
        server.model_root = str(model_folder)  # `root` in /v1/models: the folder it was loaded from
        assert demo_run(tmp_path, server) == 0
        prompts = [r.payload["prompt"] for r in server.requests]
    assert f"backtranslate.tokenizer: {model_folder}" in capsys.readouterr().err
    assert len(prompts) == 2  # wrapped in the served model's own chat template, the prefill after it
    assert all(p.startswith("<|turn|>user\n") and "<|end|>\n<|turn|>assistant\n" in p for p in prompts)


def test_a_served_model_this_machine_lacks_gets_an_error_saying_what_tokenizer_takes(tmp_path, capsys):
    with TGITestServer(flavor="vllm", tgi_info=False, model_id="smollm2") as server:
        server.model_root = "nowhere/not-a-cached-model"
        assert demo_run(tmp_path, server) == 2
        assert not server.requests  # stopped before any request
    error = capsys.readouterr().err
    assert "backtranslate.tokenizer is not set" in error and "'nowhere/not-a-cached-model'" in error
    assert "a local folder holding tokenizer_config.json or a Hub id" in error
