"""A server bft starts never takes a busy port, and is never taken as ready because another process answered.

Real sockets, real subprocesses: a port held by a listening socket, an HTTP server in this process answering
`/health` on the port a child was to serve, and Python's own `http.server` as the child.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bft.generation.endpoints.processes import PortInUseError, ServerProcess, free_port, port_taken


@dataclass
class Child(ServerProcess):
    """A subprocess that is to serve `/health` on 127.0.0.1:`port`."""

    command: list[str]
    port: int = field(default_factory=free_port)
    what = "the test server"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.launch(self.command, dict(os.environ), None)
        self.wait_ready(120, None)


def listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


class Impostor(ThreadingHTTPServer):
    """Another process's server: answers 200 at `/health`, as a server of the same kind would."""

    def __init__(self, port: int):
        class Health(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", port), Health)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def http_server(port: int, folder, delay: float = 0.0) -> list[str]:
    """Python's `http.server` on `port`, serving `folder` (a file `health` there answers `/health`)."""
    serve = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    return ["sh", "-c", f'sleep {delay}; exec "$@"', "sh", *serve]


def test_a_port_another_process_listens_on_is_taken_and_a_free_one_is_not():
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        assert port_taken("127.0.0.1", port)
        assert port_taken("0.0.0.0", port)  # a server on every address would not get it either
    assert not port_taken("127.0.0.1", port)


def test_bft_serve_on_a_busy_port_says_so_with_the_port_and_how_to_choose_another(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        command = [sys.executable, "-m", "bft.generation.cli", "serve", str(model), "--port", str(port)]
        result = subprocess.run(command + ["--log", str(tmp_path / "log")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{port}: port {port} is already in use by another process" in result.stderr
    assert "choose another port with --port N (--port 0 picks a free one)" in result.stderr
    assert "at http://" not in result.stdout  # never said to be ready
    assert not (tmp_path / "log").exists()  # no server was started


def test_a_server_is_not_ready_because_another_process_answered_on_its_port():
    server = Child([sys.executable, "-c", "import time; time.sleep(300)"])  # it never listens
    server.launch(server.command, dict(os.environ), None)
    impostor = Impostor(server.port)  # another server took the port meanwhile, and answers /health
    try:
        with pytest.raises(PortInUseError, match=rf"127\.0\.0\.1:{server.port}.*another process answered there"):
            server.wait_ready(120, None)
        assert not server.alive()  # stopped, not left behind
    finally:
        impostor.shutdown()
        impostor.server_close()
        server.kill()


def test_a_server_that_listens_on_its_port_itself_is_ready(tmp_path):
    (tmp_path / "health").write_text("ok")
    port = free_port()
    with Child(http_server(port, tmp_path), port=port) as server:
        assert server.alive()


def test_a_server_that_exits_because_its_port_was_taken_meanwhile_says_so(tmp_path):
    port = free_port()
    server = Child(http_server(port, tmp_path, delay=1.0), port=port)
    server.launch(server.command, dict(os.environ), None)
    taken = rf"exited with code 1 before it was ready\): port {port} is already in use"
    # the port is taken before the child binds it, by a socket that never answers
    try:
        with listening_socket(port), pytest.raises(PortInUseError, match=taken):
            server.wait_ready(120, None)
    finally:
        server.kill()
