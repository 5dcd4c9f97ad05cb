"""Stopping a server bft started leaves nothing of it running, however it ended (`endpoints/processes.py`)."""

import signal
import subprocess
import time

from bft.generation.endpoints.processes import GROUP_KEEPER, ServerProcess, free_port, group_alive


class KeptCommand(ServerProcess):
    """A command under the process-group keeper that real engines run under, as a server would be."""

    what = "a kept command"

    def __init__(self, script: str):
        self.port = free_port()
        self.script = script

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = ["sh", "-c", GROUP_KEEPER, "keeper", "sh", "-c", self.script]
        self.launch(command, {"PATH": "/usr/bin:/bin"}, None, signal_number=signal.SIGTERM)


def test_a_zombie_is_not_a_live_member_of_its_group():
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    assert group_alive(child.pid)
    child.kill()
    deadline = time.monotonic() + 30
    while group_alive(child.pid):  # ended, not yet reaped: a zombie must not keep `stop` waiting forever
        assert time.monotonic() < deadline, "a zombie counted as alive"
        time.sleep(0.05)
    assert child.poll() is not None and not group_alive(child.pid)


def test_stop_ends_what_a_crashed_server_left_behind():
    """The server's main process exited on its own (a crash, a failed start): the keeper signalled the group
    once and exited; a helper that ignores SIGTERM (an engine core holding a GPU) must still be ended."""
    server = KeptCommand('(trap "" TERM; exec sleep 300) & sleep 0.3; exit 1')
    server.start()
    server.process.wait(timeout=60)  # the keeper is gone
    assert group_alive(server.process.pid)  # its helper is not
    server.stop(grace=1.0)
    assert not group_alive(server.process.pid)
