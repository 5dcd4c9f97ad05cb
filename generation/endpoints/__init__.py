"""bft.generation.endpoints: the servers bft talks to.

- `client`: one endpoint: probing, chat and raw requests, errors typed as retryable or final;
- `limiter`: each endpoint's adaptive limit of requests in flight, shared by the stages (steered by the
  server's /metrics, else by the replies; backs off on 429/503; later stages first);
- `pool`: the endpoints of a stage: least-loaded choice within their limits, taking dead ones out and back;
- `asking`: a list of chat requests answered by one endpoint with retries (`bft eval`, the data report);
- `embedded`: the embedded SmolLM2 server the demo starts when no endpoint is given.
"""
