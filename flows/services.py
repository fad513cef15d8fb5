"""The served stack, on 127.0.0.1 only: PostgreSQL -> an MLflow tracking server on it -> a Prefect
server, the work pool, the deployments of prefect.yaml and a worker whose runs log to that MLflow.

  python flows/services.py start   [--state-dir .services] [--prefect-port 4200] [--mlflow-port 5000] [--pg-port 5433]
  python flows/services.py status
  python flows/services.py stop    (stops what start started, a half-finished start included)

`make serve` / `make stop` call it. Everything lives in the state dir: the PostgreSQL data directory,
the Prefect server's home, the artifact store (unless --artifacts-destination names another, e.g. an
S3-compatible bucket), the logs, services.json (what runs, by pid) and `env`, a file to `source`
that points the mlflow and prefect CLIs at these servers. `make run` keeps its embedded sqlite store.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))  # run as a script: `flows` is importable from the checkout

from flows import processes  # noqa: E402  (after the path fix above)
from flows.processes import Handle, ServiceError  # noqa: E402

HOST = "127.0.0.1"
DB = "mlflow"  # database and role: initdb makes the role the superuser, trusted on loopback only
TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}
# (name in services.json, option, env var / make variable, default port); started in this order
PORTS = (
    ("postgres", "--pg-port", "PG_PORT", 5433),
    ("mlflow", "--mlflow-port", "MLFLOW_PORT", 5000),
    ("prefect", "--prefect-port", "PREFECT_PORT", 4200),
)


@dataclass
class Settings:
    state_dir: Path
    project_dir: Path
    ports: dict[str, int]
    artifacts: str
    timeout: float
    pg_bin: str | None
    pg_user: str

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pg_data(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.ports['mlflow']}"

    @property
    def prefect_api(self) -> str:
        return f"http://{HOST}:{self.ports['prefect']}/api"

    @property
    def backend_uri(self) -> str:
        # +psycopg2: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed
        return f"postgresql+psycopg2://{DB}@{HOST}:{self.ports['postgres']}/{DB}"


@dataclass
class State:
    """services.json: what runs, saved after each start so `stop` can undo a start that died halfway."""

    path: Path
    services: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> State:
        path = state_dir / "services.json"
        try:
            services = json.loads(path.read_text())["services"] if path.is_file() else {}
        except (ValueError, KeyError) as exc:
            raise ServiceError(
                f"{path}: not a services file ({exc}); stop the services by hand, then delete it"
            ) from None
        return cls(path, services)

    def add(self, name: str, handle: Handle, log: Path, url: str) -> None:
        self.services[name] = {**handle.as_dict(), "log": str(log), "url": url}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"services": self.services}, indent=2) + "\n")

    def handle(self, name: str) -> Handle:
        entry = self.services[name]
        return Handle(entry["pid"], entry["create_time"])

    def running(self) -> list[str]:
        return [name for name in self.services if self.handle(name).process() is not None]


def base_env(cfg: Settings) -> dict[str, str]:
    """The environment of every service: telemetry off, this venv's scripts first on PATH, one
    PREFECT_HOME inside the state dir (the server's database, the CLI's profile)."""
    env = dict(os.environ) | TELEMETRY_OFF
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_HOME"] = str(cfg.state_dir / "prefect")
    env.pop("PREFECT_API_URL", None)  # a user's other server must not leak into the one started here
    return env


def executable(name: str) -> str:
    """A CLI of this venv (the one running this script), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if not found:
        raise ServiceError(f"`{name}` not found next to {sys.executable} or on PATH: run `make install`")
    return found


# --- PostgreSQL ---------------------------------------------------------------------------------


def pg_executable(cfg: Settings, name: str) -> str:
    """initdb / pg_ctl: from --pg-bin (PG_BIN), else PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    candidates = [Path(cfg.pg_bin)] if cfg.pg_bin else []
    if not cfg.pg_bin:
        on_path = shutil.which(name)
        candidates += [Path(on_path).parent] if on_path else []
        versions = Path("/usr/lib/postgresql").glob("*/bin")
        candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if (folder / name).is_file():
            return str(folder / name)
    where = cfg.pg_bin or "PATH and /usr/lib/postgresql/*/bin"
    raise ServiceError(f"PostgreSQL's `{name}` not found in {where}: apt-get install postgresql, or set PG_BIN")


def as_pg_owner(cfg: Settings, cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its commands as --pg-user (Debian's `postgres`)."""
    if os.geteuid() != 0:
        return cmd
    return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", cfg.pg_user, "--", *cmd]


def give_to_pg_owner(cfg: Settings, *paths: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        owner = pwd.getpwnam(cfg.pg_user)
    except KeyError:
        raise ServiceError(
            f"running as root, PostgreSQL needs another user and '{cfg.pg_user}' does not exist: "
            "apt-get install postgresql creates `postgres`, or pass --pg-user NAME"
        ) from None
    for path in paths:
        os.chown(path, owner.pw_uid, owner.pw_gid)
        closed = [folder for folder in path.parents if not can_enter(folder, owner)]
        if closed:  # the user can own the folder and still not reach it
            raise ServiceError(
                f"{path}: PostgreSQL runs as '{cfg.pg_user}' (it refuses root), who cannot enter {closed[0]} "
                f"(mode {closed[0].stat().st_mode & 0o777:o}): pass a --state-dir outside it, or chmod o+x {closed[0]}"
            )


def can_enter(folder: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` may traverse `folder` by its mode bits (owner, group, other)."""
    st = folder.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def start_postgres(cfg: Settings, state: State) -> None:
    data, log, port = cfg.pg_data, cfg.logs / "postgres.log", cfg.ports["postgres"]
    env = base_env(cfg)
    if not (data / "PG_VERSION").is_file():  # initdb once; later starts reuse the data directory
        data.mkdir(parents=True, exist_ok=True)
        give_to_pg_owner(cfg, data)
        initdb = [pg_executable(cfg, "initdb"), "-D", str(data), "-U", DB, "--auth=trust", "-E", "UTF8"]
        processes.run(as_pg_owner(cfg, initdb), cfg.logs / "initdb.log", env, cfg.state_dir, "PostgreSQL initdb")
    log.touch()
    give_to_pg_owner(cfg, log)
    options = f"-p {port} -k {data} -c listen_addresses={HOST}"  # socket in the data dir, TCP on loopback
    pg_ctl = [pg_executable(cfg, "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w"]
    try:
        processes.run(
            as_pg_owner(cfg, [*pg_ctl, "-t", str(max(30, int(cfg.timeout))), "start"]), log, env, data, "pg_ctl"
        )
    except ServiceError:
        raise ServiceError(f"PostgreSQL did not start on {HOST}:{port}; see {log}") from None
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    state.add("postgres", Handle.of(postmaster), log, f"postgresql://{DB}@{HOST}:{port}/{DB}")
    create_database(cfg)


def create_database(cfg: Settings) -> None:
    try:
        import psycopg2
    except ImportError:
        raise ServiceError("psycopg2 is missing (MLflow's PostgreSQL driver): pip install psycopg2-binary") from None
    where = f"PostgreSQL on {HOST}:{cfg.ports['postgres']}"
    try:
        conn = psycopg2.connect(host=HOST, port=cfg.ports["postgres"], user=DB, dbname="postgres")
    except psycopg2.Error as exc:
        raise ServiceError(f"{where}: cannot connect ({' '.join(str(exc).split())})") from None
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction (nor in `with conn`)
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DB}")
    except psycopg2.Error as exc:
        raise ServiceError(f"{where}: cannot create database {DB} ({' '.join(str(exc).split())})") from None
    finally:
        conn.close()


def stop_postgres(cfg: Settings, handle: Handle | None) -> bool:
    """Stop the postmaster; whether one was running."""
    running = (cfg.pg_data / "postmaster.pid").is_file()
    if running:
        stop = [pg_executable(cfg, "pg_ctl"), "-D", str(cfg.pg_data), "-w", "-t", "30", "-m", "fast", "stop"]
        # if pg_ctl fails, the signal below does it: the postmaster takes SIGINT as a fast shutdown
        with contextlib.suppress(ServiceError):
            processes.run(as_pg_owner(cfg, stop), cfg.logs / "pg_ctl.log", base_env(cfg), cfg.state_dir, "pg_ctl")
    if handle is not None:
        running = running or handle.process() is not None
        processes.stop(handle, signals=(signal.SIGINT,))
    return running


# --- MLflow and Prefect -------------------------------------------------------------------------


def start_mlflow(cfg: Settings, state: State) -> None:
    log, url = cfg.logs / "mlflow.log", cfg.mlflow_url
    # the job runner and its huey consumers (7 processes) serve GenAI features we do not use
    env = base_env(cfg) | {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    }
    cmd = [executable("mlflow"), "server", "--backend-store-uri", cfg.backend_uri]
    cmd += [
        "--artifacts-destination",
        cfg.artifacts,
        "--host",
        HOST,
        "--port",
        str(cfg.ports["mlflow"]),
        "--workers",
        "1",
    ]
    handle = processes.start(cmd, log, env, cfg.state_dir)
    state.add("mlflow", handle, log, url)
    ready = lambda: processes.http_get(f"{url}/health") == "OK"
    processes.wait_until(ready, name="MLflow server", where=url, log=log, timeout=cfg.timeout, handle=handle)


def start_prefect(cfg: Settings, state: State) -> None:
    log, api = cfg.logs / "prefect.log", cfg.prefect_api
    cmd = [executable("prefect"), "server", "start", "--host", HOST, "--port", str(cfg.ports["prefect"])]
    # the UI asks the server where its API is (/ui-settings); unset, Prefect answers port 4200
    # whatever --port says, and the UI of a server on any other port shows no flow runs
    env = base_env(cfg) | {"PREFECT_UI_API_URL": api}
    handle = processes.start(cmd, log, env, cfg.state_dir)
    state.add("prefect", handle, log, api.removesuffix("/api"))
    ready = lambda: processes.http_get(f"{api}/health") is True
    processes.wait_until(ready, name="Prefect server", where=api, log=log, timeout=cfg.timeout, handle=handle)


def work_pool(cfg: Settings) -> str:
    """The one work pool prefect.yaml's deployments run on."""
    path = cfg.project_dir / "prefect.yaml"
    try:
        pools = {d["work_pool"]["name"] for d in yaml.safe_load(path.read_text())["deployments"]}
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ServiceError(f"{path}: cannot read the deployments' work_pool names ({exc})") from None
    if len(pools) != 1:
        raise ServiceError(
            f"{path}: the deployments name {len(pools)} work pools {sorted(pools)}; one worker serves one"
        )
    return pools.pop()


def deploy_and_start_worker(cfg: Settings, state: State) -> None:
    pool, log, prefect = work_pool(cfg), cfg.logs / "deploy.log", executable("prefect")
    env = base_env(cfg) | {"PREFECT_API_URL": cfg.prefect_api}
    create = [prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"]  # idempotent
    processes.run(create, log, env, cfg.project_dir, f"creating work pool {pool}")
    # prefect.yaml's pull step sets the runs' working directory from $PWD at deploy time
    deploy_env = env | {"PWD": str(cfg.project_dir)}
    processes.run([prefect, "--no-prompt", "deploy", "--all"], log, deploy_env, cfg.project_dir, "prefect deploy")
    worker_log = cfg.logs / "worker.log"
    worker_env = env | {"MLFLOW_TRACKING_URI": cfg.mlflow_url}  # the flow and every stage log to the server
    handle = processes.start([prefect, "worker", "start", "--pool", pool], worker_log, worker_env, cfg.project_dir)
    state.add("worker", handle, worker_log, f"{cfg.prefect_api}/work_pools/{pool}")

    def online() -> bool:
        workers = processes.http_get(f"{cfg.prefect_api}/work_pools/{pool}/workers/filter", body={})
        return any(w.get("status") == "ONLINE" for w in workers)

    where = f"work pool {pool}"
    processes.wait_until(online, name="Prefect worker", where=where, log=worker_log, timeout=cfg.timeout, handle=handle)


def deployments(api: str) -> list[str]:
    """'<flow>/<deployment>' of every deployment the Prefect server holds."""
    try:
        flows = {f["id"]: f["name"] for f in processes.http_get(f"{api}/flows/filter", body={})}
        listed = processes.http_get(f"{api}/deployments/filter", body={})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServiceError(f"the Prefect server at {api} did not list its deployments ({exc})") from None
    return sorted(f"{flows.get(d['flow_id'], '?')}/{d['name']}" for d in listed)


# --- commands -----------------------------------------------------------------------------------

STARTERS: tuple[tuple[str, Callable[[Settings, State], None]], ...] = (
    ("postgres", start_postgres),
    ("mlflow", start_mlflow),
    ("prefect", start_prefect),
    ("worker", deploy_and_start_worker),
)


def start(cfg: Settings) -> None:
    state = State.load(cfg.state_dir)
    running = state.running()
    if running:
        dead = [name for name, _starter in STARTERS if name not in running]
        if not dead:
            raise ServiceError(f"already running from {cfg.state_dir}: {', '.join(running)} (`make stop` first)")
        restart(cfg, state, dead)
        return
    stop(cfg, quiet=True)  # what a crashed earlier start left recorded
    check_ports(cfg)
    check_artifacts(cfg)
    cfg.logs.mkdir(parents=True, exist_ok=True)
    state = State.load(cfg.state_dir)
    try:
        for _name, starter in STARTERS:
            starter(cfg, state)
        deployed = deployments(cfg.prefect_api)
    except BaseException:  # a failure or Ctrl-C halfway: leave nothing running
        stop(cfg, quiet=True)
        raise
    env_file = cfg.state_dir / "env"
    env_file.write_text(f"export MLFLOW_TRACKING_URI={cfg.mlflow_url}\nexport PREFECT_API_URL={cfg.prefect_api}\n")
    print(f"PostgreSQL  {state.services['postgres']['url']}  (MLflow's backend store; data in {cfg.pg_data})")
    print(f"MLflow      {cfg.mlflow_url}  (artifacts: {cfg.artifacts})")
    print(f"Prefect     {cfg.prefect_api.removesuffix('/api')}  (API {cfg.prefect_api})")
    print(f"worker      pool {work_pool(cfg)}; deployments: {', '.join(deployed)}")
    print(f"logs        {cfg.logs}/")
    print(f"source {env_file} to point the mlflow and prefect CLIs here; `make stop` stops it all")


def restart(cfg: Settings, state: State, dead: list[str]) -> None:
    """Start again what died (a worker killed with the machine's OOM killer, say), in start order,
    leaving the services that still run alone: `make serve` after such a death brings the stack back,
    and the worker picks up the next scheduled run."""
    for name, starter in STARTERS:
        if name not in dead:
            continue
        port = cfg.ports.get(name)
        if port is not None and processes.port_in_use(port, HOST):
            raise ServiceError(f"{name} is not running but port {port} on {HOST} is in use: `make stop`, then start")
        starter(cfg, state)
        print(f"restarted {name} (it was not running; the others were left as they run)")


def check_ports(cfg: Settings) -> None:
    """Before starting anything: every port free, no two the same."""
    seen: dict[int, str] = {}
    for name, option, var, _default in PORTS:
        port = cfg.ports[name]
        if port in seen:
            raise ServiceError(f"port {port} is given to both {seen[port]} and {name}: set {var} (or {option}) apart")
        seen[port] = name
        if processes.port_in_use(port, HOST):
            raise ServiceError(
                f"port {port} ({name}) on {HOST} is in use: pick another with {var}=<port> (or {option})"
            )


def check_artifacts(cfg: Settings) -> None:
    if cfg.artifacts.startswith("s3://"):
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ServiceError(
                f"{cfg.artifacts}: an S3 artifact store needs boto3 (pip install boto3), "
                "with MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set"
            ) from None


def stop(cfg: Settings, quiet: bool = False) -> None:
    """Stop in reverse start order; every service is tried even when one fails to stop."""
    state = State.load(cfg.state_dir)
    failures = []
    for name, _starter in reversed(STARTERS):
        if name == "postgres":  # by pg_ctl, also when start died before recording the postmaster
            try:
                if stop_postgres(cfg, state.handle(name) if name in state.services else None) and not quiet:
                    print(f"stopped postgres ({cfg.pg_data})")
            except ServiceError as exc:
                failures.append(f"postgres: {exc}")
            continue
        if name not in state.services:
            continue
        handle = state.handle(name)
        was_running = handle.process() is not None
        # a Prefect worker may outlive a lone SIGTERM (seen here); SIGINT then stops it
        signals = (signal.SIGTERM, signal.SIGINT) if name == "worker" else (signal.SIGTERM,)
        try:
            processes.stop(handle, signals=signals)
        except ServiceError as exc:
            failures.append(f"{name}: {exc}")
            continue
        if was_running and not quiet:
            print(f"stopped {name} (pid {handle.pid})")
    if failures:
        raise ServiceError("; ".join(failures))
    for path in (state.path, cfg.state_dir / "env"):
        path.unlink(missing_ok=True)
    if not quiet:
        print(f"nothing of {cfg.state_dir} runs now")


def status(cfg: Settings) -> int:
    state = State.load(cfg.state_dir)
    if not state.services:
        print(f"nothing started from {cfg.state_dir}")
        return 1
    running = state.running()
    for name, entry in state.services.items():
        handle = state.handle(name)
        if name in running:
            ports = sorted(f"{host}:{port}" for host, port in processes.listening(processes.tree(handle)))
            print(f"{name:9} running  pid {handle.pid}  {entry['url']}  listening {', '.join(ports) or '-'}")
        else:
            print(f"{name:9} exited   (log {entry['log']})")
    return 0 if len(running) == len(state.services) else 1


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def parse_args(argv: list[str] | None = None) -> tuple[str, Settings]:
    parser = argparse.ArgumentParser(
        prog="flows/services.py",
        description="Serve the pipeline on 127.0.0.1: PostgreSQL, an MLflow server on it, a Prefect server, "
        "prefect.yaml's deployments and a worker. Options default to the env vars named in brackets.",
        epilog="e.g.  make serve MLFLOW_PORT=5050;  source .services/env;  "
        "prefect deployment run 'llm-pipeline/nightly';  make stop",
    )
    parser.add_argument(
        "command", choices=["start", "stop", "status"], help="start the stack, stop it, or list what runs"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=os.environ.get("SERVICES_DIR", str(PROJECT_DIR / ".services")),
        help="data, logs, services.json and env (default .services/ in the project) [SERVICES_DIR]",
    )
    for name, option, var, default in PORTS:
        parser.add_argument(
            option,
            type=port_number,
            default=os.environ.get(var, str(default)),
            help=f"{name} port (default {default}) [{var}]",
        )
    parser.add_argument(
        "--artifacts-destination",
        default=os.environ.get("MLFLOW_ARTIFACTS_DESTINATION"),
        help="where the MLflow server stores artifacts: a folder (default <state-dir>/mlartifacts) or s3://bucket/path "
        "(S3-compatible: needs boto3 and MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) "
        "[MLFLOW_ARTIFACTS_DESTINATION]",
    )
    parser.add_argument(
        "--project-dir", type=Path, default=PROJECT_DIR, help="where prefect.yaml is (default: this checkout)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds each server may take to answer (default 120; PostgreSQL at least 30)",
    )
    parser.add_argument("--pg-bin", default=os.environ.get("PG_BIN"), help="folder of initdb and pg_ctl [PG_BIN]")
    parser.add_argument(
        "--pg-user", default="postgres", help="user PostgreSQL runs as when this runs as root (default postgres)"
    )
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    artifacts = args.artifacts_destination or str(state_dir / "mlartifacts")
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
    ports = {name: getattr(args, option.lstrip("-").replace("-", "_")) for name, option, _var, _default in PORTS}
    cfg = Settings(state_dir, args.project_dir.resolve(), ports, artifacts, args.timeout, args.pg_bin, args.pg_user)
    return args.command, cfg


def main(argv: list[str] | None = None) -> int:
    command, cfg = parse_args(argv)
    try:
        if command == "start":
            start(cfg)
        elif command == "stop":
            stop(cfg)
        else:
            return status(cfg)
    except ServiceError as exc:
        print(f"services {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
