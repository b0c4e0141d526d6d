"""Grouping speed and memory: 20,000 learning points from scratch, then a nightly update.

Writes benchmarks/results/learning_speed.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data nice -n 10 .venv/bin/python benchmarks/learning_speed.py [--points 20000]

Points: the learning points extracted from the coroners' reports, plus sentences of both
coroners' files (concerns, circumstances, investigation), plus NHS FFT comments (phase 1 and
v6), until --points distinct texts are reached (real text throughout, none repeated). Measures grouping from scratch (split the points into passages, embed each with the
sentence encoder, group, name), the encoder's own rate (texts per second), the process's peak resident
memory, and a nightly update: the saved grouping loaded and --new points never seen added
(only those are embedded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from pipelines.datasets import (
    fetch_fft_phase1,
    fetch_fft_v6,
    fetch_pfd_reports,
    fetch_pfd_reviews,
    fetch_pfd_road_traffic,
)
from pipelines.encoder import BATCH_SIZE, MAX_SEQ_LENGTH, get_encoder
from pipelines.grouping import Grouping, assign_groups, fit_groups, passages
from pipelines.reviews import extract_review_points
from pipelines.text import make_nlp

RESULTS = Path(__file__).parent / "results" / "learning_speed.json"


def real_points(n: int) -> pd.DataFrame:
    pfd = fetch_pfd_reports()
    reviews = fetch_pfd_reviews()
    points, _ = extract_review_points(reviews)
    nlp = make_nlp(sentences=True)
    road, _ = fetch_pfd_road_traffic()
    extra = [
        (rid, s.text.strip())
        for frame in (pfd, road)
        for column in ("concerns", "circumstances", "investigation")
        for rid, text in zip(frame["id"], frame[column])
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
    frame = frame.drop_duplicates("point_text", ignore_index=True)  # every text is embedded once
    if len(frame) < n:
        raise SystemExit(f"only {len(frame):,} distinct real texts; ask for fewer points")
    return frame.head(n).assign(section="", date="", team="")


class TimedEncoder:
    """The verified encoder, counting the texts it embeds and the seconds it takes."""

    def __init__(self, encoder):
        self.encoder, self.texts, self.seconds = encoder, 0, 0.0

    @property
    def info(self):
        return self.encoder.info

    def encode(self, texts, progress=False):
        started = time.perf_counter()
        vectors = self.encoder.encode(texts, progress=progress)
        self.seconds += time.perf_counter() - started
        self.texts += len(texts)
        return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--new", type=int, default=100, help="new points in the nightly update")
    args = parser.parse_args()
    everything = real_points(args.points + args.new)
    points, later = everything.head(args.points), everything.tail(args.new)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    encoder = TimedEncoder(get_encoder())  # verifying the weights' hashes is part of the run
    units = passages(points)  # what group_reviews groups: the points' sentences
    grouping, assigned = fit_groups(units, encoder=encoder, random_state=0, progress=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        grouping.save(Path(tmp))
        nightly = TimedEncoder(encoder.encoder)
        started = time.perf_counter()
        all_units = passages(pd.concat([points, later], ignore_index=True))
        updated, _ = assign_groups(Grouping.load(Path(tmp)), all_units, nightly)
        updated.save(Path(tmp))
        nightly_seconds = time.perf_counter() - started
    results = {
        "points": len(points),
        "distinct_texts": int(points["point_text"].nunique()),
        "mean_point_chars": float(points["point_text"].str.len().mean()),
        "passages": len(units),
        "groups": len(grouping.group_ids),
        "not_yet_recurring_share_of_passages": float((assigned == -1).mean()),
        "fit_seconds": seconds,
        "encoder_texts": encoder.texts,
        "encoder_seconds": encoder.seconds,
        "encoder_texts_per_second": encoder.texts / encoder.seconds,
        "grouping_seconds_besides_encoding": seconds - encoder.seconds,
        "peak_rss_mb_process": peak,
        "rss_mb_before_fit": before,
        "nightly_new_points": args.new,
        "nightly_points_embedded": nightly.texts,
        "nightly_update_seconds": nightly_seconds,
        "nightly_new_groups": len(updated.group_ids) - len(grouping.group_ids),
        "encoder_batch_size": BATCH_SIZE,
        "encoder_max_seq_length": MAX_SEQ_LENGTH,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
    }
    print(json.dumps(results, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
