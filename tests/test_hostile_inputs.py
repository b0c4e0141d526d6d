"""The hostile-input corpus (tests/hostile_inputs.py) through `cli.py score` and the nightly reader:
rows in = rows out + rows quarantined for every file, or a one-line error naming the file."""

from __future__ import annotations

import csv
import io
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from pipelines.config import Settings
from pipelines.intake import ExportReader
from pipelines.tables import InputError, TableWriter, iter_chunks
from tests.conftest import run_cli, run_cli_in_process
from tests.hostile_inputs import build


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, build(folder)


def test_the_corpus_covers_the_issue(corpus):
    folder, cases = corpus
    assert len(cases) >= 40
    assert len({c.file for c in cases}) == len(cases)
    assert sum(c.error is not None for c in cases) >= 10 and sum(c.quarantined > 0 for c in cases) >= 10


def _records(path):
    """Records as a strict CSV reader sees them, and as pandas does: both must agree."""
    text = path.read_text(encoding="utf-8")
    strict = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    by_pandas = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert len(strict) - 1 == len(by_pandas), f"{path.name}: readers disagree on the records"
    return by_pandas


def _check_score(case, folder, out_dir, small_model, state_dir, runner=run_cli_in_process):
    out, held = out_dir / f"{case.file}.out.csv", out_dir / f"{case.file}.quarantine.csv"
    result = runner("score", "--model", str(small_model["model_dir"]), "--input", str(folder / case.file),
                     "--text-column", "text", "--id-column", "complaint_id", "--output", str(out),
                     "--quarantine", str(held), env={"LFF_N_JOBS": "1"}, state_dir=state_dir)  # fmt: skip
    where = f"{case.name}: exit {result.returncode}\n{result.stderr[-1500:]}"
    assert "Traceback" not in result.stderr, where
    if case.error:
        assert result.returncode == 2, where
        last = result.stderr.strip().splitlines()[-1]
        assert case.file in last and case.error in last, where
        return
    assert result.returncode == (3 if case.quarantined else 0), where
    assert f"{case.rows_in} rows read, {case.scored} tagged" in result.stderr, where
    scored = _records(out)
    assert len(scored) == case.scored, where
    assert not scored.apply(lambda c: c.str.contains("[\x00\r]", regex=True)).any().any(), where
    if case.output_ids is not None:
        assert scored["complaint_id"].tolist() == case.output_ids, where
    for text in case.absent:
        assert text not in out.read_text(encoding="utf-8"), where
    for fragment in case.stderr:
        assert fragment in result.stderr, where
    if case.quarantined:
        assert stat.S_IMODE(os.stat(held).st_mode) == 0o600, where
        quarantine = _records(held)
        assert len(quarantine) == case.quarantined, where
        reasons = " | ".join(quarantine["_reason"])
        assert all(f in reasons for f in case.reasons), f"{where}\nreasons: {reasons}"
    else:
        assert not held.exists(), where


def test_every_case_through_cli_score(corpus, small_model, state_dir, tmp_path):
    """Every case through the score command, run in this process (the commands' code, not start-up)."""
    folder, cases = corpus
    failures = []
    for case in cases:
        try:
            _check_score(case, folder, tmp_path, small_model, state_dir)
        except AssertionError as err:
            failures.append(str(err))
    assert not failures, "\n\n".join(failures)


# One case of each kind through a real `python cli.py` process: exit codes, stderr, file modes.
AS_A_USER = ("clean.csv", "stray_quote.csv", "duplicate_id.csv", "header_only.csv", "pdf_named.csv", "utf16le_tab.csv",
             "formulas.xlsx", "no_such_export.csv")  # fmt: skip


@pytest.mark.slow
def test_some_cases_through_a_real_cli_process(corpus, small_model, state_dir, tmp_path):
    folder, cases = corpus
    chosen = [c for c in cases if c.file in AS_A_USER]
    assert len(chosen) == len(AS_A_USER), [c.file for c in chosen]

    def check(case):
        try:
            _check_score(case, folder, tmp_path, small_model, state_dir, runner=run_cli)
        except AssertionError as err:
            return str(err)

    with ThreadPoolExecutor(2) as pool:  # two CLI processes at a time: most of each is start-up
        failures = [f for f in pool.map(check, chosen) if f]
    assert not failures, "\n\n".join(failures)


def test_every_case_through_the_nightly_reader(corpus, tmp_path):
    folder, cases = corpus
    reader = ExportReader(Settings(state_dir=tmp_path, chunk_rows=20_000))
    failures = []
    for case in cases:
        try:
            good = bad = 0
            reasons = []
            for rows, held in reader.chunks(folder / case.file):
                good, bad = good + len(rows), bad + len(held)
                reasons += held["_reason"].tolist()
            outcome = (good + bad, good, bad)
            expected = (case.rows_in, case.scored, case.quarantined)
            if case.error or outcome != expected or not all(f in " | ".join(reasons) for f in case.reasons):
                failures.append(f"{case.name}: read {outcome}, expected {expected or case.error}; {reasons[:3]}")
        except InputError as err:
            if not case.error or case.error not in str(err) or case.file not in str(err):
                failures.append(f"{case.name}: {err}")
    assert not failures, "\n".join(failures)


def test_a_malformed_record_keeps_its_lines_and_raw_text(corpus):
    folder, _ = corpus
    reader = ExportReader(Settings(chunk_rows=1000))
    held = pd.concat([bad for _, bad in reader.chunks(folder / "stray_quote.csv")])
    assert held["_lines"].tolist() == ["3"]
    assert held["_raw"].iloc[0].startswith('C00009,"He said wait')
    assert held["source_row"].tolist() == [2]


def test_written_csv_round_trips_one_record_per_row(tmp_path):
    values = ["a,b", 'say "no"', "cr\rhere", "crlf\r\nhere", "lf\nhere", "nul\x00here", "bell\x07", "=SUM(A1)", "-5"]
    ids = ["00123", "1e5", "0012", "C1", "C2", "C3", "C4", "C5", "C6"]
    path = tmp_path / "out.csv"
    writer = TableWriter(path)
    writer.write(pd.DataFrame({"id": ids[:4], "text": values[:4]}))
    writer.write(pd.DataFrame({"id": ids[4:], "text": values[4:]}))
    back = _records(path)
    assert back["id"].tolist() == ids
    assert back["text"].tolist() == [
        "a,b", 'say "no"', "cr\nhere", "crlf\nhere", "lf\nhere", "nulhere", "bell", "'=SUM(A1)", "-5"
    ]  # fmt: skip
    # And the project's own reader gets the same records back.
    (chunk,) = iter_chunks(path, 100, ["id", "text"])
    assert chunk["text"].tolist() == back["text"].tolist() and "_reason" not in chunk
