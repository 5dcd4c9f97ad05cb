"""bft.generation.endpoints: the servers bft talks to.

- `transport`: HTTP to one server: its URL (`base_url`, `redact_url`), the connection pool, GETs and POSTs
  heard to their end (streamed or whole);
- `failures`: a server's failed answer (status, error body in each server's words, `Retry-After`) sorted
  into the error family of `errors.py` (retryable, rejected input, fatal); which causes mean down or busy;
- `protocols`: the bodies of TGI `/generate`, OpenAI chat and completions (requests built, replies read)
  and the server's description of itself (`/info`, `/v1/models`);
- `client`: `Endpoint`, one server as the stages use it: probing, chat and raw requests as `Generation`s,
  the server's own token count (`/tokenize`) and replies it cut short for room;
- `retry`: the one retry policy (backoff with jitter, `Retry-After` honoured) the engine and `chat_batch` use;
- `streams`: streamed (SSE) replies gathered into the shape of a whole one;
- `silence`: timing a request out on silence (its own and its endpoint's), never on its length;
- `limiter`: each endpoint's adaptive limit of requests in flight, shared by the stages (steered by the
  server's /metrics, else by the replies; backs off on 429/503; later stages first);
- `pool`: the endpoints of a stage: least-loaded choice within their limits, taking dead ones out and back;
- `chat_batch`: a list of chat requests sent to one endpoint with retries (tagging, answers, judging);
- `processes`: a model server as bft's subprocess (its own process group, readiness, exit, stop), and
  which servers this process started (`server_exit`);
- `engines`: the engines bft starts itself (vLLM, SGLang): their launch commands, readiness checks, versions
  and GPUs per replica, and `EngineServer`, one replica as a subprocess;
- `embedded`: the embedded SmolLM2 server the demo starts when no endpoint is given;
- `served_tokenizer`: the tokenizer of the model an endpoint serves, for the chat template applied by bft;
- `vllm_server`: the real vLLM's CPU build as a subprocess, as tests and benchmarks start it;
- `batches`: provider batch APIs (OpenAI's files and batches, Anthropic's Message Batches, vLLM's offline
  `run_batch`): request files written, submitted, polled and read back as replies.
"""
