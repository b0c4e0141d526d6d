"""The nightly run on a large backlog: score it from empty, then a night with 1% new or changed.

Writes benchmarks/results/nightly_backlog.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data .venv/bin/python benchmarks/nightly_backlog.py [--rows 1000000]

The backlog's texts are real FFT comments drawn with replacement (with a case number appended
so every complaint's text is its own), with made-up ids, dates and services. Both runs go
through `python cli.py nightly` in a subprocess on a SQLite store; wall time and the peak
resident memory of the process tree (sampled every 0.1 s) are reported for each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from theme_speed import run_cli_measured  # noqa: E402

from pipelines import store  # noqa: E402
from pipelines.config import Settings  # noqa: E402
from pipelines.datasets import dataset_path, fetch_fft_phase1  # noqa: E402
from pipelines.nightly import FFT_CROSSWALK  # noqa: E402
from pipelines.train import train  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "nightly_backlog.json"
SERVICES = [
    "Community Social Work Team North",
    "Community Social Work Team South",
    "Hospital Discharge Team",
    "Reablement Service",
    "Occupational Therapy",
]


def backlog(rows: int, seed: int = 0) -> pd.DataFrame:
    fft = fetch_fft_phase1()
    rng = np.random.default_rng(seed)
    texts = fft["feedback"].to_numpy()[rng.integers(0, len(fft), rows)]
    received = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 1000, rows), unit="D")
    closed = received + pd.to_timedelta(rng.integers(5, 60, rows), unit="D")
    ids = [f"C{i:07d}" for i in range(rows)]
    return pd.DataFrame(
        {
            "complaint_id": ids,
            "received_date": received.strftime("%Y-%m-%d"),
            "closed_date": closed.strftime("%Y-%m-%d"),
            "service": np.array(SERVICES)[rng.integers(0, len(SERVICES), rows)],
            "text": [f"{t} (case {i})" for t, i in zip(texts, ids)],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it (to profile a run again).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LFF_STATE_DIR": str(tmp / "state"),
            "LFF_DROP_FOLDER": str(tmp / "drop"),
            "LFF_N_JOBS": "2",
            "LFF_BATCH_ROWS": "5000",
        }
        # The default council model, registered as champion in a fresh store.
        settings = Settings(state_dir=tmp / "state")
        train(
            dataset_path("nhs_fft_phase1.csv"),
            "feedback",
            "code",
            crosswalk_path=settings.data_dir / FFT_CROSSWALK,
            register=settings.model_name,
            settings=settings,
        )
        (tmp / "drop").mkdir()
        frame = backlog(args.rows)
        frame.to_csv(tmp / "drop" / "backlog.csv", index=False)
        first = run_cli_measured(["--quiet", "nightly"], env)
        # Next night: a new export with 0.5% edited texts and 0.5% new complaints.
        rng = np.random.default_rng(1)
        n = max(1, args.rows // 200)
        edited = frame.iloc[rng.choice(len(frame), n, replace=False)].copy()
        edited["text"] = edited["text"] + " Still no reply."
        new = backlog(n, seed=2).assign(complaint_id=[f"N{i:07d}" for i in range(n)])
        time.sleep(0.05)
        pd.concat([edited, new]).to_csv(tmp / "drop" / "tonight.csv", index=False)
        second = run_cli_measured(["--quiet", "nightly"], env)
        ledger = store.read_runs(store.connect(f"sqlite:///{tmp / 'state' / 'results.db'}"))
    results = {
        "rows": args.rows,
        "from_empty": {**first, "scored": int(ledger.iloc[1]["scored"])},
        "incremental_1pct": {
            **second,
            "new": int(ledger.iloc[0]["new"]),
            "changed": int(ledger.iloc[0]["changed"]),
            "scored": int(ledger.iloc[0]["scored"]),
        },
    }
    print(json.dumps(results, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
