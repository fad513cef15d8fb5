"""flows/services.py's refusals (one line each, nothing left running) and flows/processes.py's
process-tree stop, on real processes and sockets. The whole served stack: tests/integration/test_served.py."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from flows import processes, services


@pytest.fixture
def state(monkeypatch):
    """A state dir the `postgres` user can enter when the tests run as root (pytest's tmp dirs are 700)."""
    for var in ("PG_PORT", "MLFLOW_PORT", "PREFECT_PORT", "SERVICES_DIR", "MLFLOW_ARTIFACTS_DESTINATION"):
        monkeypatch.delenv(var, raising=False)
    with tempfile.TemporaryDirectory(prefix="llm-pipeline-services-") as path:
        Path(path).chmod(0o755)
        yield Path(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ports(**given: int) -> list[str]:
    chosen = {"pg": free_port(), "mlflow": free_port(), "prefect": free_port()} | given
    return [f"--{name}-port={port}" for name, port in chosen.items()]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_port_in_use_is_refused_before_anything_starts(state, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert services.main(["start", "--state-dir", str(state), *ports(mlflow=port)]) == 1
    line = one_line(capsys)
    assert f"port {port} (mlflow)" in line and "MLFLOW_PORT=" in line and "--mlflow-port" in line
    assert list(state.iterdir()) == []  # checked before PostgreSQL was even initialised


def test_one_port_for_two_services_is_refused(state, capsys):
    port = free_port()
    assert services.main(["start", "--state-dir", str(state), *ports(pg=port, prefect=port)]) == 1
    line = one_line(capsys)
    assert f"port {port}" in line and "postgres" in line and "prefect" in line


def test_a_port_that_is_not_a_number_names_the_variable_and_the_value(state, monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_PORT", "42x")
    with pytest.raises(SystemExit) as exit_info:
        services.main(["status", "--state-dir", str(state)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--prefect-port" in err and "'42x' is not a TCP port" in err


def test_stop_and_status_with_nothing_started(state, capsys):
    assert services.main(["stop", "--state-dir", str(state)]) == 0
    assert services.main(["status", "--state-dir", str(state)]) == 1
    assert "nothing started" in capsys.readouterr().out


def test_a_postgresql_that_will_not_start_names_its_log_and_leaves_nothing(state, capsys):
    """A broken data directory (a version file, nothing else): pg_ctl fails, the line names the
    server's log, which says why."""
    data = state / "postgres"
    data.mkdir()
    (data / "PG_VERSION").write_text("9\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        os.chown(data / "PG_VERSION", owner.pw_uid, owner.pw_gid)
    args = ["--state-dir", str(state), *ports()]
    assert services.main(["start", *args]) == 1
    line = one_line(capsys)
    log = state / "logs" / "postgres.log"
    assert line.endswith(f"see {log}") and "PostgreSQL did not start" in line
    assert "postgresql.conf" in log.read_text()  # the reason is in the log the line names
    assert not (state / "services.json").exists()
    assert services.main(["stop", *args]) == 0  # `make stop` afterwards: nothing to do, no error


def test_a_folder_postgres_cannot_enter_is_found(tmp_path):
    folder = tmp_path / "closed"
    folder.mkdir(mode=0o700)
    me, nobody = pwd.getpwuid(os.getuid()), pwd.getpwnam("nobody")
    assert services.can_enter(folder, me) and not services.can_enter(folder, nobody)
    folder.chmod(0o701)
    assert services.can_enter(folder, nobody)


def test_stop_escalates_and_takes_the_whole_tree(tmp_path):
    """A parent that ignores SIGTERM (as a busy worker does) and a child it forked: SIGTERM, then
    SIGINT (the parent dies of it), and the child goes too, though SIGINT alone would not reach it."""
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    log = tmp_path / "tree.log"
    handle = processes.start([sys.executable, "-c", script], log, dict(os.environ), tmp_path)
    deadline = time.monotonic() + 30
    while not log.read_text().strip():
        assert time.monotonic() < deadline, "the parent never started its child"
        time.sleep(0.05)
    child = psutil.Process(int(log.read_text().split()[0]))
    members = {p.pid for p in processes.tree(handle)}
    assert {handle.pid, child.pid} <= members
    processes.stop(handle, signals=(signal.SIGTERM, signal.SIGINT), grace=1.0)
    assert handle.process() is None
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_a_reused_pid_is_not_taken_for_the_process_that_had_it():
    me = processes.Handle.of(os.getpid())
    assert me.process() is not None
    assert processes.Handle(me.pid, me.create_time - 100).process() is None
    assert processes.tree(processes.Handle(me.pid, me.create_time - 100)) == []


def test_listening_sockets_of_a_process_tree():
    port = free_port()
    code = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        handle = processes.Handle.of(proc.pid)
        deadline = time.monotonic() + 30
        while not processes.port_in_use(port):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert processes.listening(processes.tree(handle)) == {("127.0.0.1", port)}
    finally:
        proc.kill()
        proc.wait()
