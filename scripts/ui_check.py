"""The dashboards as a person sees them: headless Chromium screenshots of MLflow's run list, one
run's metric charts and the registered models, and of the Prefect UI on a port other than 4200.

    .venv/bin/python scripts/ui_check.py --out docs/screenshots        # make ui-check

In a temporary folder it fills a small MLflow store through the pipeline's own tracking code
(stage runs with per-step losses, a registered model with `champion` and `challenger` aliases),
starts `mlflow server` and a Prefect server on free loopback ports (the Prefect one told its own
API URL, as `make serve` does), runs one small flow against it, then loads each page in headless
Chromium. A page passes when its rendered DOM holds what a person must see there (the run names,
a drawn chart of the metric, the aliases, the flow run); one stuck on its spinner fails in one
line naming the page. The screenshots are written to --out. Needs chromium
(`apt-get install -y chromium`); the servers are stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows import processes  # noqa: E402  (the repository root first on the path)

HOST = "127.0.0.1"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
ATTEMPTS = 5  # loads of a page before it fails (see check_page)
RENDER_MS = 40000  # Chromium's virtual time for scripts and fetches to settle: 20 s left the charts undrawn
LOSSES = {"pretrain-gpt": 5.6, "pretrain-bert": 6.1, "finetune-classification-bert": 1.2}
MODEL = "llm-pipeline-classification-bert"
FLOW = "ui-check-nightly"


class CheckFailed(Exception):
    """A page did not show what it must: one line, naming the page."""


@dataclass
class Page:
    name: str  # the screenshot's file stem
    url: str
    must_show: list[str]  # strings the rendered DOM must contain


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    raise CheckFailed(f"no Chromium on PATH (tried {', '.join(CHROMIUM_NAMES)}): apt-get install -y chromium")


def render(browser: str, url: str, screenshot: Path) -> str:
    """Load `url` in headless Chromium for RENDER_MS of virtual time, write its screenshot and
    return its DOM: both from one load, so the picture is the page that was checked."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1440,900"]
    cmd += [f"--virtual-time-budget={RENDER_MS}", f"--screenshot={screenshot}", "--dump-dom", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode:
        raise CheckFailed(f"chromium exited {done.returncode} on {url}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def check_page(browser: str, page: Page, out: Path) -> None:
    """The page's DOM must hold each of page.must_show. MLflow draws its charts after a lazily
    loaded script, which virtual time does not always wait for (about one load in three left
    them undrawn here), so a page gets ATTEMPTS loads before it fails."""
    missing: list[str] = []
    for _ in range(ATTEMPTS):
        dom = render(browser, page.url, out / f"{page.name}.png")
        missing = [text for text in page.must_show if text not in dom]
        if not missing:
            shrink(out / f"{page.name}.png")
            print(f"ok  {page.name}: {page.url} -> {out / f'{page.name}.png'}", flush=True)
            return
    (out / f"{page.name}.png").unlink(missing_ok=True)
    raise CheckFailed(f"{page.name} ({page.url}): after {ATTEMPTS} loads the rendered page still lacks {missing}")


def shrink(png: Path) -> None:
    """64 colours are plenty for a dashboard: the committed PNGs stay small (~4x smaller)."""
    from PIL import Image

    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(png, optimize=True)


@contextmanager
def server(cmd: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool], name: str) -> Iterator[None]:
    handle = processes.start(cmd, log, env, log.parent)
    try:
        processes.wait_until(ready, name=name, where=" ".join(cmd[-4:]), log=log, timeout=120, handle=handle)
        yield
    finally:
        processes.stop(handle)


def fill_mlflow_store() -> tuple[str, str]:
    """Stage runs with a loss per step and a registered model with two aliases, through the
    pipeline's tracking code (MLFLOW_TRACKING_URI is set). (experiment id, the fine-tune run id)"""
    from llm_pipeline.tracking.client import mlflow_client
    from llm_pipeline.tracking.runs import stage_run
    from tests.unit.model_folders import write_model_folder

    run_id = ""
    for run_name, final in LOSSES.items():
        with stage_run(run_name) as run:
            for step in range(1, 41):
                run.log_metrics({"train/loss": final + 4.0 / step, "train/tokens_per_sec": 4000.0 + step}, step=step)
            run.log_metrics({"val/loss": final + 0.1})
            if run_name.startswith("finetune"):
                folder = write_model_folder(
                    Path(tempfile.mkdtemp()) / "m", "bert", kind="classification", labels=["a", "b"]
                )
                first = run.register_model(folder, MODEL)
                second = run.register_model(folder, MODEL)
                run_id = str(run.run_id)
    client = mlflow_client()
    assert first and second
    client.set_registered_model_alias(MODEL, "champion", first)
    client.set_registered_model_alias(MODEL, "challenger", second)
    experiment = client.get_run(run_id).info.experiment_id
    return experiment, run_id


def run_flow(api: str, env: dict[str, str], log: Path) -> None:
    """One small flow run on the Prefect server at `api`, so its UI has a run to list."""
    code = f"from prefect import flow\n@flow(name={FLOW!r})\ndef nightly():\n    return 1\nnightly()\n"
    processes.run([sys.executable, "-c", code], log, env | {"PREFECT_API_URL": api}, log.parent, "the flow run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots", help="the PNGs go here")
    args = parser.parse_args(argv)
    try:
        browser = chromium()
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ui-check-") as tmp:
            check(browser, Path(tmp), args.out.resolve())
    except (CheckFailed, processes.ServiceError) as exc:
        print(f"ui-check: {exc}", file=sys.stderr)
        return 1
    return 0


def check(browser: str, root: Path, out: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DO_NOT_TRACK": "true"}
    env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "LLM_PIPELINE_ARTIFACT_ROOT": str(root / "a")}
    env.pop("LLM_PIPELINE_TRACKING", None)
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "LLM_PIPELINE_ARTIFACT_ROOT")})
    experiment, run_id = fill_mlflow_store()
    mlflow_port, prefect_port = free_port(), free_port()
    while prefect_port in (mlflow_port, 4200):
        prefect_port = free_port()
    mlflow_url, prefect_url = f"http://{HOST}:{mlflow_port}", f"http://{HOST}:{prefect_port}"
    mlflow_cmd = [str(Path(bin_dir) / "mlflow"), "server", "--backend-store-uri", env["MLFLOW_TRACKING_URI"]]
    mlflow_cmd += ["--artifacts-destination", str(root / "a"), "--host", HOST, "--port", str(mlflow_port)]
    prefect_env = env | {"PREFECT_HOME": str(root / "prefect"), "PREFECT_UI_API_URL": f"{prefect_url}/api"}
    prefect_env.pop("PREFECT_API_URL", None)
    prefect_cmd = [str(Path(bin_dir) / "prefect"), "server", "start", "--host", HOST, "--port", str(prefect_port)]
    with (
        server(
            mlflow_cmd,
            env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            root / "mlflow.log",
            lambda: processes.http_get(f"{mlflow_url}/health") == "OK",
            "mlflow server",
        ),
        server(
            prefect_cmd,
            prefect_env,
            root / "prefect.log",
            lambda: processes.http_get(f"{prefect_url}/api/health") is True,
            "prefect server",
        ),
    ):
        run_flow(f"{prefect_url}/api", prefect_env, root / "flow.log")
        pages = [
            Page("mlflow-runs", f"{mlflow_url}/#/experiments/{experiment}/runs", list(LOSSES)),
            Page(
                "mlflow-run-metrics",
                f"{mlflow_url}/#/experiments/{experiment}/runs/{run_id}/model-metrics",
                ["train/loss", "main-svg"],  # main-svg: a chart plotly has drawn
            ),
            # the model's own page: the models list shows one alias per model and "+1"
            Page("mlflow-model-aliases", f"{mlflow_url}/#/models/{MODEL}", [MODEL, "champion", "challenger"]),
            Page("prefect-runs", f"{prefect_url}/runs", [FLOW]),
        ]
        for page in pages:
            check_page(browser, page, out)


if __name__ == "__main__":
    sys.exit(main())
