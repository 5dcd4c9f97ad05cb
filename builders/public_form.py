"""What a released file may say about the machine that made it: no absolute local paths, no private hosts.

A run records where its documents came from (`input_location` FILE:LINE, ids derived from a location),
which models answered (a model served from a local folder is named by its path), where a cached reply was
first asked (the endpoint's URL and the run's folder) and the run config
(corpus path, output folder, endpoint URLs, tokenizer folders). Useful locally; in a published dataset
they say how someone's machine or cluster is laid out. `bft build` therefore writes them in their public
form: a local path becomes its last part (`/data/crawl/part-001.jsonl.gz:17` -> `part-001.jsonl.gz:17`),
an URL on a private host keeps its scheme, port and path with the host masked (`http://gpu7.internal:8080`
-> `http://<private-host>:8080`), and public hosts (a hosted API) stay as they are. The generate output
itself keeps everything, for resuming and debugging.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit, urlunsplit

PRIVATE_HOST = "<private-host>"
PRIVATE_SUFFIXES = (".local", ".internal", ".lan", ".localdomain", ".home", ".corp", ".intranet", ".cluster")
WINDOWS_PATH_RE = re.compile(r"^[A-Za-z]:[\\/]")
LOCATION_RE = re.compile(r"^(?P<prefix>location:)?(?P<path>.+?):(?P<line>\d+)$")


def is_private_host(host: str) -> bool:
    """Loopback, private and link-local addresses, and names that only resolve inside a network."""
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
        return address.is_private or address.is_loopback or address.is_link_local
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(PRIVATE_SUFFIXES)


def public_url(url: str) -> str:
    """`url` with a private host masked (module docstring); a public one as it is, credentials dropped."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return url
    host = PRIVATE_HOST if is_private_host(parts.hostname) else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_local_path(value: str) -> bool:
    return value.startswith(("/", "~/", "./", "../")) or bool(WINDOWS_PATH_RE.match(value))


def public_path(value: str) -> str:
    """A local path as its last part; anything else (a Hub id, a relative name) as it is."""
    if not is_local_path(value):
        return value
    path = PureWindowsPath(value) if WINDOWS_PATH_RE.match(value) else PurePosixPath(value)
    return path.name or value


def public_location(value: str | None) -> str | None:
    """`FILE:LINE` (or `location:FILE:LINE`) with the file's directories dropped."""
    if not value:
        return value
    match = LOCATION_RE.match(value)
    if match and is_local_path(match["path"]):
        return f"{match['prefix'] or ''}{public_path(match['path'])}:{match['line']}"
    return public_path(value)


def public_value(value):
    """A config value (nested dicts and lists walked) in its public form: URLs and local paths."""
    if isinstance(value, dict):
        return {key: public_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [public_value(item) for item in value]
    if isinstance(value, str):
        if "://" in value:
            return public_url(value)
        if value.startswith("-"):  # an engine argument (`serve.args`, `stats.json` servers): its paths inside
            return public_args(value)
        return public_path(value)
    return value


def public_args(text: str) -> str:
    """Engine arguments (`--download-dir /scratch/hf --dtype float16`) with each local path, alone or as a flag's
    `=` value, as its last part."""
    words = []
    for word in text.split(" "):
        flag, equals, value = word.partition("=")
        words.append(f"{flag}={public_path(value)}" if equals and flag.startswith("-") else public_path(word))
    return " ".join(words)


def public_provenance(entry: dict) -> dict:
    """A provenance entry with the model's local path, a cached reply's endpoint and run folder, and the local
    paths among the engine arguments of a server bft started, made public."""
    changed = {**entry}
    for key, public in (
        ("model_id", public_path),
        ("first_asked_endpoint", public_url),
        ("first_asked_run", public_path),
        ("server_args", public_args),
    ):
        if entry.get(key):
            changed[key] = public(entry[key])
    return changed


def public_row(row: dict) -> dict:
    """A dataset row with its location, location-derived id and the models' local paths made public."""
    changed = {}
    if "input_location" in row:
        changed["input_location"] = public_location(row["input_location"])
    if isinstance(row.get("id"), str) and row["id"].startswith("location:"):
        changed["id"] = public_location(row["id"])
    if isinstance(row.get("provenance"), list):
        changed["provenance"] = [public_provenance(entry) for entry in row["provenance"]]
    return changed
