"""Shared fixtures. Tests that need the public data read it from LFF_PUBLIC_DATA_DIR
(set by .ci/run to ../shared/data) and fail, not skip, when it is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.datasets import fetch_fft_phase1

CROSSWALK = PROJECT_ROOT / "data" / "crosswalks" / "nhs_fft_phase1.yaml"
# Model cards written by the tests' training runs go to a temporary folder, not models/.
os.environ.setdefault("LFF_MODELS_DIR", __import__("tempfile").mkdtemp(prefix="lff-models-"))


@pytest.fixture(scope="session")
def public_data_dir() -> Path:
    folder = os.environ.get("LFF_PUBLIC_DATA_DIR")
    assert folder, "LFF_PUBLIC_DATA_DIR must point at the public datasets (e.g. ../shared/data)"
    return Path(folder)


@pytest.fixture(scope="session")
def fft(public_data_dir) -> pd.DataFrame:
    return fetch_fft_phase1(public_data_dir)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory) -> Path:
    """One MLflow store for the session (training is the slow part, so models are shared)."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def settings(state_dir, public_data_dir) -> Settings:
    return Settings(state_dir=state_dir, public_data_dir=public_data_dir)


def _cli_env(env: dict | None, state_dir: Path | None) -> dict:
    return {**(env or {}), **({"LFF_STATE_DIR": str(state_dir)} if state_dir is not None else {})}


def _checked(result, args, check: bool):
    if check and result.returncode != 0:
        raise AssertionError(f"cli {args} exited {result.returncode}\n{result.stderr[-3000:]}")
    return result


def run_cli(*args: str, env: dict | None = None, state_dir: Path | None = None, check: bool = False):
    """Run ``python cli.py ARGS`` in a subprocess, as a user would."""
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "cli.py"), *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **_cli_env(env, state_dir)},
        capture_output=True,
        text=True,
    )
    return _checked(result, args, check)


def run_cli_in_process(*args: str, env: dict | None = None, state_dir: Path | None = None, check: bool = False):
    """Run a CLI command in this process (no interpreter start-up or imports, ~5 s each).

    Same arguments, exit codes and stderr as `run_cli`; an exception that would escape the
    command shows up as a traceback in stderr, as it would from the real process. The
    command's logging set-up is undone afterwards, so later tests see their own. Not
    thread-safe: the environment is patched for the call.
    """
    import logging
    import traceback

    from typer.testing import CliRunner

    import cli

    loggers = [logging.getLogger(name) for name in ("pipelines", "mlflow")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        result = CliRunner().invoke(cli.app, list(args), env=_cli_env(env, state_dir))
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved):
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return _checked(subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, stderr), args, check)


@pytest.fixture(scope="session")
def council_model(state_dir, public_data_dir, tmp_path_factory) -> dict:
    """The default council model, trained once through the CLI on FFT phase 1 via the crosswalk."""
    model_dir = tmp_path_factory.mktemp("model") / "council"
    result = run_cli(
        "train",
        "--input", str(public_data_dir / "nhs_fft_phase1.csv"),
        "--text-column", "feedback",
        "--label-column", "code",
        "--crosswalk", str(CROSSWALK),
        "--model-dir", str(model_dir),
        "--register", "complaint-themes",
        state_dir=state_dir,
        check=True,
    )  # fmt: skip
    return {"model_dir": model_dir, "stdout": result.stdout, "stderr": result.stderr, "name": "complaint-themes"}


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> dict:
    """A model folder trained in seconds on the bundled made-up sample, for tests of input
    handling that need a model but not a good one (the fast lane uses it instead of
    ``council_model``)."""
    from pipelines.taxonomy import Taxonomy
    from pipelines.themes import make_pipeline
    from pipelines.tracking import save_model_dir

    sample = pd.read_csv(PROJECT_ROOT / "data" / "sample" / "complaints.csv", dtype=str, keep_default_na=False)
    pipeline = make_pipeline(n_jobs=1).fit(sample["text"], sample["theme"])
    taxonomy = Taxonomy.from_file(PROJECT_ROOT / "data" / "taxonomy.yaml")
    info = {"classes": list(pipeline.classes_), "feedback_types": taxonomy.feedback_type_of(), "multi_label": False}
    model_dir = save_model_dir(pipeline, info, tmp_path_factory.mktemp("small") / "model")
    return {"model_dir": model_dir}


# Tests on the model trained on the full public data (about a minute, once a session) or on a
# nightly run in a subprocess are the slow lane; `pytest -m "not slow"` leaves them out.
SLOW_FIXTURES = {"council_model", "nightly_env", "hostile_reports", "tagged_store"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert found, "PostgreSQL server binaries not found (Debian package postgresql); the store tests need them"
    return found[-1].parent


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1, started for the session and stopped by its PID."""
    import shutil
    import socket

    bindir = _postgres_bin()
    # Not under pytest's own temporary folder: the postgres user cannot enter it.
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="lff-pg-"))
    data = root / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_postgres = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        # runuser lives in /usr/sbin, which a minimal CI PATH may leave out.
        runuser = shutil.which("runuser") or next(
            (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if Path(p).exists()), "runuser"
        )
        as_postgres = [runuser, "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root}",
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        os.kill(pid, 15)  # smart shutdown of this server only
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            __import__("time").sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
