"""bft's typed errors.

Every error a user can cause (bad input, bad configuration, an unusable endpoint) is a `BftError`
whose message names the problem and where it is (file and line, config key, endpoint URL), so the
CLI can print it without a traceback.

What a request to an inference endpoint can end in instead of a reply is a family, as huggingface_hub's
`HfHubHTTPError` and its subclasses are: `EndpointFailure` and its three kinds, which the engine and the
endpoint pool each act on differently (`endpoints/failures.py` sorts a server's answer into them):

- `RetryableError`: another attempt may not meet it (429, 5xx, timeouts, dropped connections, streams cut
  short, aborted generations, a vLLM engine that died); retried with the `RetryPolicy` (`endpoints/retry.py`),
  which honours the server's `Retry-After`;
- `RequestRejected`: the server refused this particular input (a prompt longer than the context): the
  document is cut to fit or rejected, never retried as it is;
- `EndpointError`: no request to this endpoint can succeed (401/403/404, unreachable, no model): the run
  stops with one message. It is also a `BftError`, so the CLI prints it.
"""

from __future__ import annotations


class BftError(Exception):
    """Base class of every error bft reports to users."""


class ConfigError(BftError):
    """A run configuration is invalid: unknown key, wrong type, impossible value."""


class CorpusError(BftError):
    """The input corpus cannot be read: missing path, malformed line, bad encoding, unknown Hub id."""


class EndpointFailure(Exception):
    """Base class of what a request to an inference endpoint can end in instead of a reply."""


class EndpointError(BftError, EndpointFailure):
    """An endpoint cannot serve the run at all (unreachable, bad auth, unknown model).

    Raised for persistent failures that would otherwise reject every document one by one.
    """


class RetryableError(EndpointFailure):
    """A failure that another attempt may not meet (overload, server error, network).

    `cause` names its kind for the run's counters (`overloaded`, `timeout`, `connection`, `http_503`,
    `engine_dead`, `malformed_response`, `finish_abort`, ...); `retry_after` is the seconds the server asked
    to wait (`Retry-After`), when it said.
    """

    def __init__(self, cause: str, detail: str = "", retry_after: float | None = None):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail
        self.retry_after = retry_after


class RequestRejected(EndpointFailure):
    """The server refused this input; the document is rejected with `reason` (`reasons.py`).

    `parameter` names the request field the server blamed, when it said (vLLM's `param`).
    """

    def __init__(self, reason: str, detail: str = "", parameter: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.parameter = parameter
