"""A model server as bft's subprocess: started in a process group of its own, waited for, watched, stopped.

The embedded `transformers serve` (`embedded.py`), the engines bft starts (`engines.py`) and the real vLLM of
the tests (`vllm_server.py`) share this. Each
server started here is registered by URL, so the engine can tell a request that failed because the server
bft started has exited (`server_exit`) from one a live server refused: the run then stops naming the exit,
instead of rejecting documents.

A server never starts on a port another process listens on, and is never taken as ready because another
process answered there: the port is tried before the start (`port_taken`), the process that listens on it
is checked to be the server's own once `/health` answers (`listens_elsewhere`, from `/proc` on Linux), and
a server that exits before it was ready while its port is taken says so (`PortInUseError`).

A server may be restarted when it exits (`run/servers.py` watches the replicas bft starts): while it has
restarts left (`restarts_left`), its exit is not reported, so the engine retries the requests it was sent and
the endpoint pool waits for it to answer again; once none are left (`give_up`), `server_exit` reports how it
ended, how often it was restarted and where its log is.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bft.generation.errors import EndpointError

PR_SET_PDEATHSIG = 1  # prctl(2)
KILLED_WAIT = 10.0  # seconds `stop` waits for a SIGKILLed group to be gone
RUNNING: dict[str, ServerProcess] = {}  # the servers this process started, by URL
# The process-group keeper a real engine runs under (`sh -c GROUP_KEEPER NAME COMMAND...`): runs the command and
# ends the whole process group when it exits (with its exit status) or when this `sh` is told to stop (SIGTERM:
# its parent died, or `stop`); TERM is ignored meanwhile so the `sh` outlives its `kill 0`.
GROUP_KEEPER = 'trap \'trap "" TERM; kill 0; exit 143\' TERM; "$@" & wait $!; code=$?; trap "" TERM; kill 0; exit $code'


def server_exit(url: str) -> str | None:
    """How the server bft started at `url` ended for good (with its log, once its restarts are spent); None
    while it runs, while a restart of it is to come or under way, or when it is not one bft started."""
    server = RUNNING.get(url)
    if server is None:
        return None
    if server.gave_up is not None:
        return server.gave_up
    if server.restarts_left > 0:
        return None
    return server.exit_report()


def server_restarting(url: str) -> bool:
    """Whether the server bft started at `url` is down with a restart of it to come or under way: its requests
    can only fail until it is ready again, so its endpoint leaves rotation at once (`EndpointPool`)."""
    server = RUNNING.get(url)
    return server is not None and server.gave_up is None and (server.restarting or not server.alive())


def give_up(server: ServerProcess, why: str) -> None:
    """Record that `server` has ended for good (its restarts spent, or a restart failed): `server_exit` says
    `why` from now on, so that the requests sent to it stop the run instead of waiting for it."""
    server.gave_up, server.restarts_left = why, 0
    RUNNING[server.url] = server


def forget(server: ServerProcess) -> None:
    """Stop reporting on `server` (`server_exit`, `server_restarting`): it was stopped at the run's end."""
    if RUNNING.get(server.url) is server:
        del RUNNING[server.url]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PortInUseError(EndpointError):
    """Another process listens on the port a server was to listen on."""

    def __init__(self, what: str, host: str, port: int, detail: str = ""):
        super().__init__(
            f"{what} cannot listen on {host}:{port}{detail}: port {port} is already in use by another process; "
            "choose another port"
        )
        self.host, self.port = host, port


def port_taken(host: str, port: int) -> bool:
    """Whether another process listens on `host:port`: binding it as servers do (SO_REUSEADDR, so that a port
    a stopped server left in TIME_WAIT counts as free) fails with EADDRINUSE. Any other failure (an address
    not on this machine) is left for the server to report."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return True
    return False


def listening_sockets(port: int) -> set[str] | None:
    """The inodes of the sockets listening on TCP `port` (any address), from `/proc/net/tcp` and `tcp6`; None
    where there is no such table (not Linux)."""
    found, read = set(), False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        read = True
        for line in lines:  # sl local_address rem_address st ... inode: `0100007F:1F90 ... 0A ... 123456`
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found if read else None


def sockets_of_group(group: int) -> set[str]:
    """The inodes of the sockets the processes of process group `group` hold open."""
    inodes = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            for descriptor in (entry / "fd").iterdir():
                target = os.readlink(descriptor)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return inodes


def group_alive(group: int) -> bool:
    """Whether any running process of process group `group` is left. A zombie (ended, not yet reaped) is not:
    under a parent that never reaps (bft as PID 1 in a container), it would otherwise be waited for forever."""
    proc = Path("/proc")
    if proc.is_dir():
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()  # after `pid (comm)`: state ppid pgrp ...
            except OSError:
                continue  # (ended meanwhile)
            if len(fields) > 2 and int(fields[2]) == group and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(signal_number: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn`: in the child, before it starts, ask Linux to send it `signal_number` when the process
    that started it dies, however it ends (SIGKILL included). Elsewhere a no-op."""

    def ask() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal_number)

    return ask


class ServerProcess:
    """What a server subprocess shares: `launch`, `wait_ready`, `exit_description`, `stop`, `kill`, and use as
    a context manager. A subclass gives `url`, `start` and `what` (its name in messages)."""

    what = "the server"
    process: subprocess.Popen | None = None
    host = "127.0.0.1"  # the address it listens on; a subclass gives `port`
    port = 0
    restarts_left = 0  # restarts a watcher will still make when it exits (`run/servers.py`)
    restarting = False  # a watcher is launching it again and waiting until it is ready
    gave_up: str | None = None  # how it ended for good, once no restart is left (`give_up`)

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        """Start the server and wait until it is ready; on leaving, stop its whole process group."""
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def launch(self, command: list[str], env: dict, log_path: Path | None, signal_number=signal.SIGKILL) -> None:
        """Start `command` in a new session (its own process group), output to `log_path` or nowhere; refuse
        if another process already listens on the server's port."""
        if port_taken(self.host, self.port):
            raise PortInUseError(self.what, self.host, self.port)
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed below)
        try:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(signal_number),
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        RUNNING[self.url] = self

    def wait_ready(self, timeout: float, log_path: Path | None, answers: Callable[[], bool] = lambda: True) -> None:
        """Wait until `/health` says 200 from the server's own process and `answers()` is true; stop it and raise
        past `timeout` seconds, or when another process holds its port."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        see = f"; see {log_path}" if log_path else ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                exited = f" (it exited with code {self.process.returncode} before it was ready{see})"
                if port_taken(self.host, self.port):
                    raise PortInUseError(self.what, self.host, self.port, exited)
                raise EndpointError(f"{self.what} exited with code {self.process.returncode} before it was ready{see}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    if response.status == 200 and self.listens_elsewhere():
                        self.stop()
                        raise PortInUseError(self.what, self.host, self.port, " (another process answered there)")
                    if response.status == 200 and self.alive() and answers():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                last_error = str(error)
            time.sleep(0.5)
        self.stop()
        raise EndpointError(f"{self.what} did not become ready in {timeout:.0f} s: {last_error}")

    def listens_elsewhere(self) -> bool:
        """Whether the socket listening on the server's port belongs to no process of its group (another
        process answers there). False where `/proc` cannot tell (not Linux)."""
        listening = listening_sockets(self.port)
        return bool(listening) and not listening & sockets_of_group(self.process.pid)

    def exit_description(self) -> str | None:
        """None while the server runs; else how it ended (`killed by SIGKILL (out of memory?)`, `exit code 1`)."""
        code = self.process.poll() if self.process is not None else None
        if code is None:
            return None
        if code < 0 or (code > 128 and code - 128 in signal.Signals._value2member_map_):  # `sh` says 128 + N
            name = signal.Signals(-code if code < 0 else code - 128).name
            return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        return f"exit code {code}"

    def exit_report(self) -> str | None:
        """How it ended, as the error that stops a run says it (a subclass adds its restarts and log)."""
        return self.exit_description()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the whole process group; SIGKILL if it has not ended in `grace` seconds. Returns once no
        process of the group is left (the group keeper exits as soon as it has signalled the others).

        The server is forgotten (`RUNNING`) unless a restart of it is under way (`restarting`): while a restart
        ends what its exit left of the group (which may take `grace` and more), `server_restarting` still says so,
        and the endpoint pool keeps it out of rotation. The watcher forgets it if the run ends meanwhile."""
        if not self.restarting:
            forget(self)
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        # also when the keeper had already exited (the server crashed, or never became ready): what it
        # signalled once may still be ending, or ignore SIGTERM (an engine core, workers holding GPUs)
        deadline, killed_at = time.monotonic() + grace, None
        while group_alive(self.process.pid):
            now = time.monotonic()
            if killed_at is None and now > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                killed_at = now
            elif killed_at is not None and now > killed_at + KILLED_WAIT:
                break  # (SIGKILL cannot be ignored: what is left is ending in the kernel)
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would end it."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
