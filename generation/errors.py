"""bft's typed errors.

Every error a user can cause (bad input, bad configuration, an unusable endpoint) is a `BftError`
whose message names the problem and where it is (file and line, config key, endpoint URL), so the
CLI can print it without a traceback.
"""

from __future__ import annotations


class BftError(Exception):
    """Base class of every error bft reports to users."""


class ConfigError(BftError):
    """A run configuration is invalid: unknown key, wrong type, impossible value."""


class CorpusError(BftError):
    """The input corpus cannot be read: missing path, malformed line, bad encoding, unknown Hub id."""


class EndpointError(BftError):
    """An endpoint cannot serve the run at all (unreachable, bad auth, unknown model).

    Raised for persistent failures that would otherwise reject every document one by one.
    """
