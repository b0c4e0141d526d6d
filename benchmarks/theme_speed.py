"""Theme classifier speed and memory, side by side with the pxtextmining baseline.

Writes benchmarks/results/theme_speed.json. Run (on an otherwise idle machine):
    LFF_PUBLIC_DATA_DIR=../shared/data .venv/bin/python benchmarks/theme_speed.py [--rows 1000000]

Measures (issue 2):
  * training time on FFT phase 1 (the 80% stratified split): ours vs TfidfVectorizer() +
    SVC(C=15, class_weight='balanced', probability=True); ours learns the sub-category codes as
    sub-themes, as in theme_accuracy.py, with its fold fits on 2 processes (and, for reference,
    on one);
  * in-process scoring rate on one core, ours vs the baseline, on the 20% test texts (the
    fastest of 3 runs each: the machine is shared and noisy);
  * the CLI scoring a CSV of --rows rows (texts drawn with replacement from the real comments)
    on 2 worker processes: wall time, rows per second and peak resident memory of the whole
    process tree (the CLI and its workers, sampled every 0.1 s).
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

import pandas as pd
import psutil
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline as sk_make_pipeline
from sklearn.svm import SVC

from pipelines.config import PROJECT_ROOT
from pipelines.datasets import fetch_fft_phase1
from pipelines.themes import make_pipeline, tag
from pipelines.tracking import save_model_dir

RESULTS = Path(__file__).parent / "results" / "theme_speed.json"


def timed(func, *args):
    started = time.perf_counter()
    value = func(*args)
    return value, time.perf_counter() - started


def best_of(repeat: int, func, *args):
    """Fastest of ``repeat`` runs: on a shared machine, the run least slowed by other work."""
    runs = [timed(func, *args) for _ in range(repeat)]
    return min(runs, key=lambda run: run[1])


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_cli_measured(args: list[str], env: dict) -> dict:
    """Run the CLI, sampling the resident memory of its whole process tree."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "cli.py"), *args], env=env, stderr=subprocess.PIPE, text=True
    )
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(0.1)
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"cli exited {proc.returncode}: {stderr[-2000:]}")
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak / 2**20,
        "cli_says": (stderr.strip().splitlines() or [""])[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows in the CSV scored through the CLI.")
    parser.add_argument("--baseline-score-rows", type=int, default=2000, help="Rows the (slow) baseline scores.")
    args = parser.parse_args()

    fft = fetch_fft_phase1()
    train, test = train_test_split(fft, test_size=0.2, stratify=fft["label"], random_state=42)
    codes = train["code"].to_numpy()
    ours, ours_fit = timed(
        lambda: make_pipeline(n_jobs=2).fit(train["feedback"], train["label"], classifier__sub_labels=codes)
    )
    _, ours_fit_one_process = timed(
        lambda: make_pipeline().fit(train["feedback"], train["label"], classifier__sub_labels=codes)
    )
    base, base_fit = timed(
        sk_make_pipeline(TfidfVectorizer(), SVC(C=15, class_weight="balanced", probability=True, random_state=42)).fit,
        train["feedback"],
        train["label"],
    )
    texts = pd.concat([test["feedback"]] * 10, ignore_index=True)
    tag(ours, texts.head(100))  # warm up spaCy and caches
    _, ours_score = best_of(3, tag, ours, texts)
    base_texts = texts.head(args.baseline_score_rows)
    _, base_score = best_of(3, base.predict_proba, base_texts)
    results = {
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "training_seconds": {
            "ours": ours_fit,
            "baseline": base_fit,
            "speedup": base_fit / ours_fit,
            "ours_one_process": ours_fit_one_process,
            "speedup_one_process": base_fit / ours_fit_one_process,
        },
        "scoring_rows_per_second_one_process": {
            "ours": len(texts) / ours_score,
            "baseline": len(base_texts) / base_score,
            "speedup": (len(texts) / ours_score) / (len(base_texts) / base_score),
        },
    }
    print(json.dumps(results, indent=1), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = save_model_dir(ours, {"classes": list(ours.classes_), "feedback_types": {}}, tmp / "model")
        big = fft[["feedback", "organization"]].sample(args.rows, replace=True, random_state=0).reset_index(drop=True)
        big.insert(0, "id", [f"R{i:07d}" for i in range(len(big))])
        source = tmp / "big.csv"
        big.to_csv(source, index=False)
        size_mb = source.stat().st_size / 2**20
        del big
        env = {**os.environ, "LFF_STATE_DIR": str(tmp / "state"), "LFF_N_JOBS": "2"}
        cli = run_cli_measured(
            [
                "--quiet",
                "score",
                "--model",
                str(model_dir),
                "--input",
                str(source),
                "--text-column",
                "feedback",
                "--id-column",
                "id",
                "--output",
                str(tmp / "out.csv"),
            ],
            env,
        )
    results["cli_score_csv"] = {
        "rows": args.rows,
        "input_mb": size_mb,
        **cli,
        "rows_per_second": args.rows / cli["seconds"],
        "workers": 2,
    }
    print(json.dumps(results["cli_score_csv"], indent=1), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
