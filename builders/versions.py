"""How releases are named on the Hub: repo ids and semantic versions, shared by datasets and models.

A release is a commit tagged `vX.Y.Z` in `ORG/NAME`; `bft release` (datasets) and `bft train
--push_to_hub` (models) check both before any request, and never move a tag.
"""

from __future__ import annotations

import re

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
