"""bft.generation.endpoints: the servers bft talks to.

- `client`: one endpoint: probing, chat and raw requests, errors typed as retryable or final, the server's
  own token count (`/tokenize`) and replies it cut short for room;
- `streams`: streamed (SSE) replies gathered into the shape of a whole one;
- `silence`: timing a request out on silence (its own and its endpoint's), never on its length;
- `limiter`: each endpoint's adaptive limit of requests in flight, shared by the stages (steered by the
  server's /metrics, else by the replies; backs off on 429/503; later stages first);
- `pool`: the endpoints of a stage: least-loaded choice within their limits, taking dead ones out and back;
- `asking`: a list of chat requests answered by one endpoint with retries (`bft eval`, the data report);
- `processes`: a model server as bft's subprocess (its own process group, readiness, exit, stop), and
  which servers this process started (`server_exit`);
- `embedded`: the embedded SmolLM2 server the demo starts when no endpoint is given;
- `served_tokenizer`: the tokenizer of the model an endpoint serves, for the chat template applied by bft;
- `vllm_server`: a real vLLM server as a subprocess (tests and benchmarks start the CPU build with it).
"""
