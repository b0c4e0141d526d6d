"""The scorer on Spark local[2] beside the local engine, on the same Parquet file of real comments.

Writes benchmarks/results/spark_throughput.json. Run (on an otherwise idle machine, with the
spark extra installed and Java 17):
    LFF_PUBLIC_DATA_DIR=../shared/data .venv/bin/python benchmarks/spark_throughput.py [--rows 1000000]

Reports, for both engines through `python cli.py score`: wall time, rows per second and peak
resident memory of the whole process tree (sampled every 0.1 s); for Spark also the session
start-up time (measured on its own, then subtracted for the scoring rate), the peak RSS of the
Python driver process alone, and the measured rows per second per core. A cluster of N workers
of c cores each is expected to score at most N x c x that per-core rate (linear scaling, the best
case: start-up and the final write do not shrink with more workers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from theme_speed import run_cli_measured, tree_rss  # noqa: E402, F401

from pipelines.config import PROJECT_ROOT  # noqa: E402
from pipelines.datasets import fetch_fft_phase1  # noqa: E402
from pipelines.themes import make_pipeline  # noqa: E402
from pipelines.tracking import save_model_dir  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "spark_throughput.json"
CORES = 2


def spark_startup_seconds(env: dict) -> float:
    code = (
        "import time; t = time.perf_counter(); from pipelines.score import spark_session; "
        "s = spark_session('local[2]'); s.range(1).count(); print(time.perf_counter() - t); s.stop()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def measured_with_driver(args: list[str], env: dict) -> dict:
    """As run_cli_measured, also keeping the peak RSS of the Python driver process alone."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "cli.py"), *args], env=env, stderr=subprocess.PIPE, text=True
    )
    watched, peak, driver = psutil.Process(proc.pid), 0, 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(watched))
        try:
            driver = max(driver, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"cli exited {proc.returncode}: {stderr[-2000:]}")
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak / 2**20, "driver_peak_rss_mb": driver / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    fft = fetch_fft_phase1()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_pipeline().fit(fft["feedback"], fft["label"])
        model_dir = save_model_dir(model, {"classes": list(model.classes_), "feedback_types": {}}, tmp / "model")
        rows = fft[["feedback"]].sample(args.rows, replace=True, random_state=0).reset_index(drop=True)
        rows.insert(0, "id", [f"R{i:07d}" for i in range(len(rows))])
        source = tmp / "comments.parquet"
        rows.to_parquet(source, index=False)
        del rows
        env = {**os.environ, "LFF_STATE_DIR": str(tmp / "state"), "LFF_N_JOBS": str(CORES)}
        common = ["--quiet", "score", "--model", str(model_dir), "--input", str(source), "--text-column", "feedback"]
        common += ["--id-column", "id"]
        local = run_cli_measured([*common, "--output", str(tmp / "local.parquet")], env)
        startup = spark_startup_seconds(env)
        spark = measured_with_driver(
            [*common, "--engine", "spark", "--spark-master", f"local[{CORES}]", "--output", str(tmp / "spark")], env
        )
    scoring = max(spark["seconds"] - startup, 1e-9)
    per_core = args.rows / scoring / CORES
    results = {
        "rows": args.rows,
        "cores": CORES,
        "local": {**local, "rows_per_second": args.rows / local["seconds"]},
        "spark_local": {
            **spark,
            "session_startup_seconds": startup,
            "rows_per_second_including_startup": args.rows / spark["seconds"],
            "rows_per_second_after_startup": args.rows / scoring,
            "rows_per_second_per_core": per_core,
        },
        "spark_vs_local_speed": (args.rows / scoring) / (args.rows / local["seconds"]),
        "expected_cluster_rows_per_second_upper_bound": {
            f"{n} workers x 4 cores": round(n * 4 * per_core) for n in (4, 16, 64)
        },
    }
    print(json.dumps(results, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
