"""Long-running processes of the served stack: start one in its own process group with a log,
wait until it answers, stop its whole tree, and list the TCP ports a set of processes listens on.

Generic on purpose: flows/services.py says which servers to run; this module only knows processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil


class ServiceError(Exception):
    """One line for the user: which service, what went wrong, which log to read."""


@dataclass(frozen=True)
class Handle:
    """A started process, identified by pid and start time so a reused pid is never signalled."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> Handle:
        return cls(pid, psutil.Process(pid).create_time())

    def process(self) -> psutil.Process | None:
        """The live process, or None once it exited (a zombie counts as exited)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding host:port fails. SO_REUSEADDR, so a port in TIME_WAIT counts as free (the
    servers set it too) while a listener on it, or on 0.0.0.0, counts as in use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def start(cmd: Sequence[str], log: Path, env: dict[str, str], cwd: Path) -> Handle:
    """Start `cmd` detached in a new session (its own process group, so stopping it reaches the
    children it forks), stdout and stderr appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    return Handle.of(proc.pid)


def run(cmd: Sequence[str], log: Path, env: dict[str, str], cwd: Path, what: str) -> None:
    """Run a one-shot command to completion, output to `log`; a failure names the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        code = subprocess.run(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out).returncode
    if code != 0:
        raise ServiceError(f"{what} failed (`{' '.join(cmd[:3])} ...` exited {code}); see {log}")


def http_get(url: str, body: dict | None = None, timeout: float = 5.0) -> Any:
    """GET (or POST `body` as JSON) and return the decoded JSON, or the text if it is not JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    try:
        return json.loads(text)
    except ValueError:
        return text


def wait_until(
    ready: Callable[[], bool], *, name: str, where: str, log: Path, timeout: float, handle: Handle | None = None
) -> None:
    """Poll `ready()` until true. Fails in one line, naming the log, when the timeout passes or the
    process exits first. Connection errors just mean "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if handle is not None and handle.process() is None:
            raise ServiceError(f"{name} exited before it answered at {where}; see {log}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{name} did not answer at {where} within {timeout:g} s; see {log}")
        time.sleep(0.5)


def tree(handle: Handle) -> list[psutil.Process]:
    """The live process, its descendants and the rest of its process group (helpers such as job
    runners that a server forked and that outlive it, reparented to init). Empty once it exited:
    its pid, and so its group id, may by then belong to someone else."""
    root = handle.process()
    if root is None:
        return []
    found = {root.pid: root}
    with _gone_ok():
        found |= {child.pid: child for child in root.children(recursive=True)}
    for proc in psutil.process_iter():
        if _pgid(proc) == handle.pid and proc.pid not in found:
            found[proc.pid] = proc
    return list(found.values())


def stop(handle: Handle, signals: Sequence[signal.Signals] = (signal.SIGTERM,), grace: float = 15.0) -> None:
    """Stop the process tree: each signal in turn (to the group and to every member), `grace`
    seconds for it to exit, then SIGKILL whatever is left. Raises if something survives that."""
    members = tree(handle)
    for sig in [*signals, signal.SIGKILL]:
        alive = _alive(members)
        if not alive:
            return
        if any(_pgid(proc) == handle.pid for proc in alive):  # the group is still ours, not a reused id
            with _gone_ok():
                os.killpg(handle.pid, sig)
        for proc in alive:
            with _gone_ok():
                proc.send_signal(sig)
        # stragglers forked while stopping join the list
        members = list({p.pid: p for p in [*alive, *tree(handle)]}.values())
        psutil.wait_procs(members, timeout=grace if sig != signal.SIGKILL else 5)
    left = _alive(members)
    if left:
        raise ServiceError(f"processes {[p.pid for p in left]} survived SIGKILL")


def listening(processes: Iterable[psutil.Process]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that these processes hold."""
    found = set()
    for proc in processes:
        with _gone_ok():
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
    return found


def _alive(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in processes:
        with _gone_ok():
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except ProcessLookupError:
        return None


def _gone_ok() -> contextlib.suppress:
    """Ignore a process that exited (or a group that emptied) between listing and acting on it."""
    return contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError)
