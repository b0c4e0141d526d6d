"""Grouping speed and memory on 20,000 learning points drawn from real text.

Writes benchmarks/results/learning_speed.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data .venv/bin/python benchmarks/learning_speed.py [--points 20000]

Points: the learning points extracted from the coroners' reports, plus sentences of their
concerns and circumstances, plus NHS FFT comments (phase 1 and v6), until --points are reached
(real text throughout). Measures fit_groups (lemmatise, represent, choose k, cluster, name)
wall time and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pandas as pd

from pipelines.datasets import fetch_fft_phase1, fetch_fft_v6, fetch_pfd_reports, fetch_pfd_reviews
from pipelines.learning import extract_review_points, fit_groups
from pipelines.text import make_nlp

RESULTS = Path(__file__).parent / "results" / "learning_speed.json"


def real_points(n: int) -> pd.DataFrame:
    pfd = fetch_pfd_reports()
    reviews = fetch_pfd_reviews()
    points, _ = extract_review_points(reviews)
    nlp = make_nlp(sentences=True)
    extra = [
        (rid, s.text.strip())
        for column in ("concerns", "circumstances")
        for rid, text in zip(pfd["id"], pfd[column])
        for s in nlp(text).sents
        if len(s.text.strip()) > 30
    ]
    fft = fetch_fft_phase1()
    extra += [(f"fft-{i}", t) for i, t in zip(fft.index, fft["feedback"]) if len(t) > 30]
    v6 = fetch_fft_v6()
    extra += [(f"v6-{i}", t) for i, t in zip(v6.index, v6["text"]) if len(t) > 30]
    more = pd.DataFrame(extra, columns=["report_id", "point_text"]).assign(
        position=lambda f: f.groupby("report_id").cumcount() + 1000
    )
    frame = pd.concat([points[["report_id", "position", "point_text"]], more], ignore_index=True)
    while len(frame) < n:  # repeat real text if the sources run short, with distinct positions
        frame = pd.concat([frame, frame.assign(position=frame["position"] + 100_000)], ignore_index=True)
    return frame.head(n).assign(section="", date="", team="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20_000)
    args = parser.parse_args()
    points = real_points(args.points)
    distinct = points["point_text"].nunique()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    grouping, assigned = fit_groups(points, random_state=0)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = {
        "points": len(points),
        "distinct_texts": int(distinct),
        "groups": len(grouping.group_ids),
        "ungrouped_share": float((assigned == -1).mean()),
        "fit_seconds": seconds,
        "peak_rss_mb_process": peak,
        "rss_mb_before_fit": before,
    }
    print(json.dumps(results, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
