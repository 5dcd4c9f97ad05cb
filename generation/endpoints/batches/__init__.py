"""Provider batch APIs: a stage's requests sent as files, answered hours later at a lower price.

`base.py` says what every batch API offers bft (`BatchApi`); one module per protocol implements it:
`openai.py` (`/v1/files` + `/v1/batches`, and the providers that copy that format), `anthropic.py`
(`/v1/messages/batches`) and `vllm_offline.py` (vLLM's `run_batch` on this machine, the same file format
as OpenAI's). Which requests go into which batch, the ledger that resumes pending batches and the retries
of expired items are the run's (`run/batching.py`).
"""
