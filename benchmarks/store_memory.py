"""Memory of the commands that read the whole results store, at two store sizes.

Writes benchmarks/results/store_memory.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data .venv/bin/python benchmarks/store_memory.py [--sizes 100000 1000000]

For each size a SQLite store is filled with that many complaints (real FFT comments drawn with
replacement, made-up ids, dates, services and tags) of which a fixed 5,000 carry a theme from
the export, so the training set is the same size at every store size. Each entry point then
runs in its own process (the package functions the CLI calls) and reports its peak resident
memory (ru_maxrss): the review export (unsure tags up to --limit, plus the audit sample),
`train --from-store` (assembling the training set, then training on it) and the theme report.
A third store has the largest size but only --history complaints in the last two years (the
rest received 2005-2024): a store grown over years, as a council's does, against the first two,
where ten times the complaints fall in the same months (the report reads its period's rows).
Memory that does not grow with the store is what the issue asks for; seconds are noisy on a
shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipelines import store  # noqa: E402
from pipelines.config import Settings  # noqa: E402
from pipelines.datasets import fetch_fft_phase1  # noqa: E402
from pipelines.deadlines import acknowledgement_deadline, learning_stage  # noqa: E402
from pipelines.taxonomy import Taxonomy  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "store_memory.json"
LABELLED = 5_000
SERVICES = ["Community Social Work Team North", "Hospital Discharge Team", "Reablement Service"]
TODAY = dt.date(2026, 11, 30)


def fill_store(url: str, rows: int, seed: int = 0, batch: int = 50_000, history_from: int | None = None) -> None:
    """``rows`` complaints, each with one current tagging, inserted in batches. With
    ``history_from``, complaints from that many on are older (received 2005-2024): a store
    grown over years, whose report period holds no more complaints than a small store's."""
    engine = store.connect(url)
    texts = fetch_fft_phase1()["feedback"].to_numpy()
    themes = np.array(Taxonomy.from_file(Settings().taxonomy_path).theme_names)
    rng = np.random.default_rng(seed)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        ids = [f"C{i:07d}" for i in range(start, start + n)]
        received = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 690, n), unit="D")
        if history_from is not None and start >= history_from:
            received = pd.Timestamp("2005-01-01") + pd.to_timedelta(rng.integers(0, 7300, n), unit="D")
        theme = themes[rng.integers(0, len(themes), n)]
        confidence = rng.uniform(0.2, 1.0, n)
        labelled = np.arange(start, start + n) < LABELLED
        closed = (received + pd.to_timedelta(rng.integers(5, 60, n), unit="D")).to_numpy()
        stage = learning_stage(closed, np.full(n, None), TODAY)
        complaint_rows = pd.DataFrame(
            {
                "complaint_id": ids,
                "source_file": "backlog.csv",
                "received_date": received.date,
                "closed_date": pd.DatetimeIndex(closed).date,
                "service": np.array(SERVICES)[rng.integers(0, len(SERVICES), n)],
                "text_redacted": texts[rng.integers(0, len(texts), n)],
                "text_sha256": [f"{i:064d}" for i in range(start, start + n)],
                "details_sha256": [f"{i:064d}" for i in range(start, start + n)],
                "human_theme": np.where(labelled, theme, ""),
                "learning_deadline": stage["learning_deadline"].to_numpy(),
                "learning_status": stage["learning_status"].to_numpy(),
                "acknowledgement_deadline": acknowledgement_deadline(received.to_numpy()).to_numpy(),
                "first_seen_run": "bench",
                "updated_run": "bench",
            }
        )
        tag_rows = pd.DataFrame(
            {
                "complaint_id": ids,
                "is_current": True,
                "theme": theme,
                "theme_confidence": confidence,
                "themes": theme,
                "needs_review": confidence < 0.5,
                "evidence": "",
                "feedback_type": "complaint",
                "model_name": "complaint-themes",
                "model_version": "1",
                "run_id": "bench",
            }
        )
        _insert(engine, "complaints", complaint_rows)
        _insert(engine, "taggings", tag_rows)
    engine.dispose()


def _insert(engine, table: str, frame: pd.DataFrame) -> None:
    """Bulk insert through the driver (dates as ISO text, as SQLAlchemy stores them in SQLite):
    several times faster than SQLAlchemy's executemany, so a 1M store fills in minutes."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == bool:
            frame[column] = frame[column].astype(int)
        elif len(frame) and isinstance(frame[column].iloc[0], dt.date):
            frame[column] = [None if pd.isna(d) else d.isoformat() for d in frame[column]]
    sql = f"INSERT INTO {table} ({', '.join(frame.columns)}) VALUES ({', '.join('?' * len(frame.columns))})"
    with engine.begin() as conn:
        conn.connection.executemany(sql, frame.itertuples(index=False, name=None))


def measure(task: str, url: str, scratch: Path) -> dict:
    """Run one entry point in a child process; its peak RSS and seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, "--task", task, "--url", url, "--scratch", str(scratch)],
        capture_output=True,
        text=True,
        env={**os.environ, "LFF_STATE_DIR": str(scratch / "state"), "LFF_STORE": url},
    )
    if result.returncode != 0:  # recorded, so one failing entry point does not lose the others' figures
        return {"error": result.stderr.strip().splitlines()[-1][:300]}
    return {"peak_rss_mb": round(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"], 1),
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def run_task(task: str, url: str, scratch: Path) -> None:
    settings = Settings(state_dir=scratch / "state", store=url)
    engine = store.connect(url)
    if task == "review_export":
        from pipelines.corrections import export_review

        export_review(engine, settings, scratch / "review.xlsx", limit=2_000)
    elif task == "train_from_store":
        from pipelines.train import assemble_training_set, train

        labelled, _ = assemble_training_set(engine)
        train(labelled, "text", "theme", taxonomy_path=settings.taxonomy_path, settings=settings)
    elif task == "report":
        from pipelines.reports import run_reports

        run_reports(settings, scratch / "reports", today=TODAY, record_bulletin=False, engine=engine)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--history", type=int, default=100_000,
        help="also a store of the largest size whose complaints after this many are older than the report's window",
    )  # fmt: skip
    parser.add_argument("--tasks", nargs="+", default=["review_export", "train_from_store", "report"])
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        run_task(args.task, args.url, args.scratch)
        return
    results: dict = {"labelled_complaints": LABELLED, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        stores = [(str(size), size, None) for size in args.sizes]
        if args.history:
            largest = max(args.sizes)
            stores.append((f"{largest} ({largest - args.history} before 2025)", largest, args.history))
        for name, size, history_from in stores:
            scratch = Path(tmp) / name.split()[0] / ("history" if history_from else "dense")
            scratch.mkdir(parents=True)
            url = f"sqlite:///{scratch / 'results.db'}"
            started = time.perf_counter()
            fill_store(url, size, history_from=history_from)
            entry = {"fill_seconds": round(time.perf_counter() - started, 1)}
            results["sizes"][name] = entry
            for task in args.tasks:
                entry[task] = measure(task, url, scratch)
                print(name, task, entry[task], flush=True)
                save(results)  # after each entry point, so a run cut short keeps what it measured
    print(json.dumps(results, indent=1))


def save(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
