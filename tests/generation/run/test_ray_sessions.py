"""A Ray run's actors close their endpoints' HTTP sessions: no "Unclosed client session" in the run's output.

`bft generate --executor ray` in a subprocess, as a user runs it, starting its own local Ray cluster (whose
workers' output Ray copies to the command's stderr), against the TGI test server.
"""

import subprocess
import sys

from tests.paths import DEMO_CORPUS
from tests.servers.tgi import TGITestServer


def test_ray_workers_leave_no_aiohttp_session_unclosed(tmp_path):
    out = tmp_path / "o"
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)]
    command += ["--executor", "ray", "--limit", "6", "--no-progress"]
    with TGITestServer() as server:
        result = subprocess.run([*command, "--endpoint", server.url], capture_output=True, text=True, timeout=580)
        assert server.requests  # the actors did send (and so opened their sessions)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rewrite        entered      6  kept      6" in result.stdout
    assert "Unclosed client session" not in result.stderr, result.stderr[-3000:]
    assert "Unclosed connector" not in result.stderr
