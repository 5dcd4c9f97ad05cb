"""Test servers that follow the real protocols, and the scripted models they play.

- `protocol.py`: what TGI, vLLM and SGLang answer and in which words (routes, bodies, errors, finish reasons,
  stream events, metrics), written once for every fake server: the test server below and the benchmarks'
  simulated servers (`benchmarks/simulated_tgi.py`, `benchmarks/simulated_vllm.py`);
- `tgi.py`: the TGI/vLLM/SGLang test server, scripted per request;
- `models.py`: the scripts it plays (the paper's model, a picky one, a copying one, a tagger, ...), shared by
  the tests so that no test imports another;
- `hub.py`: the Hugging Face Hub; `real_vllm.py`: the real vLLM, for the tests that compare with it.
- `engine_stub.py`: a stand-in SGLang started by SGLang's own command line, for `bft generate --serve`;
- `openai_batch.py`: OpenAI's Files and Batch API; `anthropic_batch.py`: Anthropic's Message Batches
  (`send: batch`), each with hooks to fail, expire or cancel items and counts of what was paid for.

Imported as `tests.servers.*` (pytest puts the repository root on the path, see pyproject.toml; the
benchmarks put it there themselves).
"""
