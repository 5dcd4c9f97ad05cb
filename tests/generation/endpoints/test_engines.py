"""The engines bft starts itself (`endpoints/engines.py`): their documented command lines, the GPUs a replica
takes, and the readiness and version checks, asked of the test server in each engine's flavor over real HTTP."""

import pytest

from bft.generation.endpoints.engines import (
    ENGINES,
    SGLANG,
    VLLM,
    answers,
    engine_version,
    gpus_per_replica,
    launch_command,
)
from bft.generation.errors import EndpointError
from tests.servers import protocol
from tests.servers.tgi import TGITestServer


def test_vllm_is_started_by_its_api_server_module_with_the_arguments_passed_through():
    command = launch_command(
        VLLM, "/v/bin/python", "meta-llama/Llama-3.1-70B", "llama", 8000, ["-tp 4", "--dtype=bfloat16"]
    )
    assert command == [
        "/v/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "meta-llama/Llama-3.1-70B",
        "--served-model-name",
        "llama",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "-tp",
        "4",
        "--dtype=bfloat16",
    ]


def test_sglang_is_started_by_launch_server_with_its_model_path_flag():
    command = launch_command(
        SGLANG, "python3", "/models/qwen", "qwen", 30000, ["--tp-size 2", "--mem-fraction-static 0.8"]
    )
    assert command == [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "/models/qwen",
        "--served-model-name",
        "qwen",
        "--host",
        "127.0.0.1",
        "--port",
        "30000",
        "--tp-size",
        "2",
        "--mem-fraction-static",
        "0.8",
    ]
    assert set(ENGINES) == {"vllm", "sglang"}


def test_an_argument_with_quotes_stays_one_word():
    command = launch_command(VLLM, "python", "m", "m", 1, ["--override-generation-config '{\"temperature\": 0.5}'"])
    assert command[-2:] == ["--override-generation-config", '{"temperature": 0.5}']


@pytest.mark.parametrize(
    ("engine", "args", "gpus"),
    [
        (VLLM, [], 1),
        (VLLM, ["--tensor-parallel-size", "4"], 4),
        (VLLM, ["-tp 2", "--pipeline-parallel-size=2"], 4),
        (VLLM, ["--tensor-parallel-size 2", "--tensor-parallel-size 8"], 8),  # the last one wins, as argparse
        (VLLM, ["--data-parallel-size 2", "-tp 2"], 4),
        (VLLM, ["--tp-size 4"], 1),  # SGLang's spelling: not vLLM's
        (VLLM, ["--tensor_parallel_size=2", "--pipeline_parallel_size 2"], 4),  # its parser takes underscores
        (SGLANG, ["--tp-size 4"], 4),
        (SGLANG, ["--tensor-parallel-size=2", "--pp-size", "2", "--dp-size 2"], 8),
        (SGLANG, ["-tp 4"], 1),  # vLLM's short form: not SGLang's
    ],
)
def test_a_replica_takes_the_product_of_its_parallel_sizes_in_gpus(engine, args, gpus):
    assert gpus_per_replica(engine, args) == gpus


def test_a_parallel_size_that_is_not_a_number_is_refused_naming_it():
    with pytest.raises(EndpointError, match=r"vLLM argument --tensor-parallel-size 'four': expected a number"):
        gpus_per_replica(VLLM, ["--tensor-parallel-size four"])


def test_vllm_is_ready_when_a_one_token_completion_answers():
    with TGITestServer(flavor="vllm", model_id="smollm2") as server:
        assert answers(VLLM, server.url, "smollm2")
        (request,) = server.requests
        assert request.payload["max_tokens"] == 1 and request.payload["model"] == "smollm2"
        server.down = True
        assert not answers(VLLM, server.url, "smollm2", timeout=5)


def test_sglang_is_ready_when_health_generate_says_200_and_not_while_it_starts():
    with TGITestServer(flavor="sglang") as server:
        server.starting = True
        assert not answers(SGLANG, server.url, "bft/test-model", timeout=5)
        server.starting = False
        assert answers(SGLANG, server.url, "bft/test-model")
        assert not server.requests  # a GET: no completion asked
    with TGITestServer(flavor="vllm") as server:  # no /health_generate (404): not an SGLang that is ready
        assert not answers(SGLANG, server.url, "bft/test-model", timeout=5)


def test_each_engine_says_its_version_on_its_own_route():
    with TGITestServer(flavor="vllm") as server:
        assert engine_version(VLLM, server.url) == protocol.VLLM_VERSION
        assert engine_version(SGLANG, server.url) is None
    with TGITestServer(flavor="sglang") as server:
        assert engine_version(SGLANG, server.url) == protocol.SGLANG_VERSION
        assert engine_version(VLLM, server.url) is None
