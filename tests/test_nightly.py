"""The nightly run: defaults, incremental and idempotent scoring, re-exports, bad rows,
deadlines, the lock, and crash safety under SIGKILL."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from pipelines import store
from pipelines.config import PROJECT_ROOT, Settings
from pipelines.datasets import sample_complaints_path
from pipelines.deadlines import acknowledgement_deadline, add_working_days, learning_stage
from pipelines.nightly import run_nightly, store_snapshot
from tests.conftest import run_cli, run_cli_in_process

THEMES = {"quality_of_service", "communication", "process_not_followed", "general_service", "staff_behaviour"}


@pytest.mark.slow
def test_default_run_trains_a_model_then_tags_the_sample_into_the_store(tmp_path):
    result = run_cli("nightly", state_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "public FFT data" in result.stderr
    engine = store.connect(f"sqlite:///{tmp_path / 'results.db'}")
    tagged = store.current_taggings(engine)
    sample = pd.read_csv(sample_complaints_path(), dtype=str, keep_default_na=False)
    assert sorted(tagged["complaint_id"]) == sorted(sample["complaint_id"])
    assert set(tagged["theme"]) <= THEMES
    # Where the export says complaint or compliment, the model's theme is one of that type's.
    given = tagged["feedback_type_given"].fillna("")
    assert (tagged.loc[given != "", "feedback_type"] == given[given != ""]).all() and (given != "").sum() > 100
    # The human-assigned theme is kept apart from the model's.
    human = tagged.set_index("complaint_id")["human_theme"].fillna("")
    assert (human.loc[sample["complaint_id"]].to_numpy() == sample["theme"].to_numpy()).all()
    changes = list((tmp_path / "outputs" / "changes").glob("taggings-*.csv"))
    assert len(changes) == 1 and len(pd.read_csv(changes[0])) == len(sample)
    # The bundled made-up reviews are grouped into learning, in the store and as files.
    points, groups = store.read_learning(engine)
    assert set(points["report_id"]) == {"SIR-2024-01", "SIR-2024-02", "SIR-2025-01", "SIR-2025-02"}
    assert groups["recurring"].any() and (tmp_path / "outputs" / "learning_groups.csv").exists()
    assert not points["point_text"].str.contains("Testperson|07700 900123").any()  # redacted
    again = run_cli("nightly", state_dir=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "training default model" not in again.stderr
    assert "reviews unchanged" in again.stderr and "exports already processed" in again.stderr
    ledger = store.read_runs(engine)
    assert ledger["status"].tolist()[:2] == ["success", "success"]
    assert ledger["scored"].tolist()[:2] == [0, len(sample)]  # the second run scored nothing
    assert "success" in run_cli("runs", state_dir=tmp_path).stdout
    # The second night changed nothing: its changes file has the header only.
    second = max((tmp_path / "outputs" / "changes").glob("taggings-*.csv"), key=lambda p: p.stat().st_mtime_ns)
    assert second != changes[0] and pd.read_csv(second).empty
    full = run_cli("export", "--output", str(tmp_path / "all.parquet"), state_dir=tmp_path)
    assert full.returncode == 0 and len(pd.read_parquet(tmp_path / "all.parquet")) == len(sample)


@pytest.mark.slow
def test_without_public_data_a_demo_model_is_trained_on_the_sample(tmp_path):
    empty = tmp_path / "no_public_data"
    empty.mkdir()
    result = run_cli("nightly", state_dir=tmp_path, env={"LFF_PUBLIC_DATA_DIR": str(empty)})
    assert result.returncode == 0, result.stderr
    assert "made-up sample" in result.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def nightly_env(request, council_model, state_dir, tmp_path):
    """Environment for a nightly run on its own store (SQLite, or a fresh PostgreSQL database)
    and drop folder, with the shared champion."""
    drop = tmp_path / "drop"
    drop.mkdir()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = _fresh_postgres_database(request.getfixturevalue("postgres_url"), tmp_path.name)
    env = {
        "LFF_STORE_URL": url,
        "LFF_DROP_FOLDER": str(drop),
        "LFF_OUTPUT_FOLDER": str(tmp_path / "out"),
        "LFF_N_JOBS": "1",
    }
    return {"env": env, "drop": drop, "state_dir": state_dir, "tmp": tmp_path}


def _fresh_postgres_database(server_url: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    database = "t_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower())[:50]
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}"'))
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + database


def _nightly(ctx, *extra):
    """The nightly command in this process: the run is the test; start-up is tested by the
    default-run, lock and kill tests, which use a real process."""
    return run_cli_in_process("nightly", *extra, env=ctx["env"], state_dir=ctx["state_dir"])


def _runs(ctx) -> str:
    return run_cli_in_process("runs", "--limit", "1", env=ctx["env"], state_dir=ctx["state_dir"], check=True).stdout


def _engine(ctx):
    return store.connect(ctx["env"]["LFF_STORE_URL"])


def test_re_exports_rescore_only_edited_and_new_complaints(nightly_env):
    sample = pd.read_csv(sample_complaints_path(), dtype=str, keep_default_na=False)
    sample.to_csv(nightly_env["drop"] / "export-1.csv", index=False)
    assert _nightly(nightly_env).returncode == 0
    time.sleep(0.05)
    second = sample.copy()
    second.loc[:4, "text"] = second.loc[:4, "text"] + " I am still waiting for an answer."
    second.loc[10, "closed_date"] = "2025-11-03"  # details change only: no re-scoring
    extra = sample.head(3).assign(complaint_id=["NEW-1", "NEW-2", "NEW-3"])
    pd.concat([second, extra]).to_excel(nightly_env["drop"] / "export-2.xlsx", index=False)
    result = _nightly(nightly_env)
    assert result.returncode == 0, result.stderr
    run = store.read_runs(_engine(nightly_env)).iloc[0]
    assert (run["new"], run["changed"], run["scored"]) == (3, 5, 8)
    # The closed-date change is an update (stored, not re-scored), counted and shown in `runs`.
    assert run["updated"] == 1 and run["rows_read"] == run["scored"] + run["updated"] + run["unchanged"]
    header, row = (line.split() for line in _runs(nightly_env).splitlines()[:2])
    assert row[header.index("updated") + 1] == "1", (header, row)  # +1: started_at prints as two words
    with _engine(nightly_env).connect() as conn:
        history = pd.read_sql("select complaint_id, is_current from taggings", conn)
    counts = history.groupby("complaint_id").size()
    assert set(counts[counts == 2].index) == set(sample["complaint_id"].head(5))
    assert history.groupby("complaint_id")["is_current"].sum().eq(1).all()
    assert _nightly(nightly_env).returncode == 0
    assert store.read_runs(_engine(nightly_env)).iloc[0]["scored"] == 0


def test_bad_rows_in_exports_are_quarantined_with_reasons(nightly_env):
    rows = [
        "complaint_id,received_date,closed_date,service,text",
        "B-1,2024-02-30,,North,Nobody called me back about the care package.",
        "B-2,31/02/2024,,North,The carer did not arrive on Tuesday.",
        "B-3,yesterday,,North,The assessment was never done.",
        ",2024-03-01,,North,A complaint without an id.",
        "B-5,2024-03-01,,North,First version of this complaint.",
        "B-5,2024-03-01,,North,A different text under the same id.",
        "B-7,2024-03-01,not a date,North,Closed date is wrong.",
        "B-8,01/03/2024,,North,This row is fine and uses a UK date.",
        'B-9,2024-03-02,,North,"This row is cut off',
    ]
    (nightly_env["drop"] / "bad.csv").write_text("\n".join(rows) + "\n")
    (nightly_env["drop"] / "cp1252.csv").write_bytes(
        "complaint_id,received_date,service,text\nW-1,2024-04-02,South,The carer\u2019s visit was cancelled \u2013 again\n".encode(
            "cp1252"
        )
    )
    # The export's feedback type: praise filed as a complaint still gets a complaint theme;
    # a type the taxonomy does not know is quarantined with the reason.
    (nightly_env["drop"] / "typed.csv").write_text(
        "complaint_id,received_date,feedback_type,text\n"
        'T-1,2024-04-03,Complaint,"Thank you so much, the carers were wonderful."\n'
        "T-2,2024-04-03,enquiry,Can I ask when the day centre opens?\n"
    )
    result = _nightly(nightly_env)
    assert result.returncode == 3, result.stderr
    with _engine(nightly_env).connect() as conn:
        held = pd.read_sql("select complaint_id, column_name, reason from quarantine", conn)
    reasons = dict(zip(held["complaint_id"].fillna(""), held["reason"]))
    assert reasons["T-2"] == "feedback_type 'enquiry' is not a feedback type of the taxonomy (complaint, compliment)"
    typed = store.current_taggings(_engine(nightly_env)).set_index("complaint_id")
    assert typed.loc["T-1", "theme"] in {"quality_of_service", "communication", "process_not_followed"}
    assert "is not a date" in reasons["B-1"] and "is not a date" in reasons["B-2"] and "is not a date" in reasons["B-3"]
    assert "missing id" in set(held["reason"])
    assert "malformed CSV record, line 10: bad quoting (the file ends inside a quoted field)" in set(held["reason"])
    assert reasons["B-5"].startswith("duplicate id 'B-5'")
    assert "closed_date 'not a date'" in reasons["B-7"]
    tagged = store.current_taggings(_engine(nightly_env))
    assert set(tagged["complaint_id"]) >= {"B-8", "W-1"}
    assert "The carer's visit" in tagged.set_index("complaint_id").loc["W-1", "text_redacted"]
    run = store.read_runs(_engine(nightly_env)).iloc[0]
    assert (
        run["status"] == "quarantined rows"
        and run["rows_read"] == run["scored"] + run["quarantined"] + run["unchanged"]
    )
    files = list((nightly_env["tmp"] / "out").glob("quarantine-*.csv"))
    assert len(files) == 1 and "B-3" in files[0].read_text()


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        ("2023-12-22", 1, "2023-12-27"),  # Christmas Day and Boxing Day 2023
        ("2024-12-13", 20, "2025-01-15"),  # Christmas, Boxing Day and New Year's Day
        ("2024-03-28", 1, "2024-04-02"),  # Good Friday and Easter Monday 2024
        ("2025-04-17", 3, "2025-04-24"),  # Easter 2025
        ("2026-05-22", 1, "2026-05-26"),  # Spring bank holiday Monday 2026
        ("2023-08-25", 1, "2023-08-29"),  # Summer bank holiday Monday 2023
        ("2026-12-24", 2, "2026-12-30"),  # Christmas 2026 on a Friday: Boxing Day substitute Monday 28th
        ("2024-06-08", 1, "2024-06-10"),  # a Saturday: the next working day is day 1
    ],
)
def test_working_day_deadlines_use_the_bank_holidays(start, days, expected):
    assert str(add_working_days([start], days)[0]) == expected


def test_learning_stage_status_and_acknowledgement():
    stage = learning_stage(
        ["2024-12-13", "2024-12-13", "2024-12-13", None, "2026-11-20", "2026-11-02"],
        [None, "2025-01-15", "2025-01-16", None, None, None],
        dt.date(2026, 11, 26),
    )
    assert stage["learning_status"].tolist() == [
        "overdue",
        "completed on time",
        "completed late",
        "not closed",
        "open",
        "due soon",
    ]
    assert str(acknowledgement_deadline(["2024-12-24"])[0]) == "2024-12-31"  # 25, 26 Dec are bank holidays


def test_a_second_run_is_refused_while_one_holds_the_lock_and_a_stale_lock_is_recovered(nightly_env, tmp_path):
    engine = _engine(nightly_env)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with engine.begin() as conn:
            conn.execute(
                store.locks.insert().values(
                    name="nightly",
                    run_id="live-run",
                    pid=holder.pid,
                    host=__import__("socket").gethostname(),
                    acquired_at=store.now(),
                )
            )
        result = _nightly(nightly_env)
        assert result.returncode == 4
        assert "not started: another run (live-run" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    with engine.begin() as conn:
        conn.execute(store.runs.insert().values(run_id="live-run", started_at=store.now(), status="running"))
    result = _nightly(nightly_env)  # the holder is dead now: its lock is stale
    assert result.returncode == 0, result.stderr
    ledger = store.read_runs(engine).set_index("run_id")
    assert ledger.loc["live-run", "status"] == "abandoned"


def _kill_plan(totals: dict) -> list[tuple[str, int]]:
    """12 kill points spread over a whole run: before statements (setup, mid-batch between a
    batch's statements, the ledger and learning updates at the end) and inside commits."""
    executes = [max(1, round(totals["execute"] * f)) for f in (0.01, 0.05, 0.15, 0.3, 0.5, 0.7, 0.85, 0.95, 0.99)]
    commits = [max(1, round(totals["commit"] * f)) for f in (0.25, 0.5, 0.9)]
    return [("execute", k) for k in executes] + [("commit", k) for k in commits]


def settings_from(env: dict) -> Settings:
    """The settings a CLI run with this environment would use."""
    names = {k[4:].lower(): v for k, v in env.items() if k.startswith("LFF_")}
    return Settings(**{k: v for k, v in names.items() if k in Settings.model_fields})


def _killpoint(kind: str, n: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.killpoint", kind, str(n), "--", "--quiet", "nightly"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_runs_killed_at_12_points_leave_the_store_consistent_and_the_next_run_completes_exactly_once(
    nightly_env, tmp_path
):
    sample = pd.read_csv(sample_complaints_path(), dtype=str, keep_default_na=False).head(96)
    sample.to_csv(nightly_env["drop"] / "export.csv", index=False)
    base = {**os.environ, **nightly_env["env"], "LFF_STATE_DIR": str(nightly_env["state_dir"]), "LFF_BATCH_ROWS": "8"}
    postgres = base["LFF_STORE_URL"].startswith("postgresql")

    def store_for(name: str) -> str:
        if postgres:
            return _fresh_postgres_database(
                base["LFF_STORE_URL"].rsplit("/", 1)[0] + "/postgres", f"{tmp_path.name}_{name}"
            )
        return f"sqlite:///{tmp_path / name}.db"

    # Reference: an uninterrupted run on its own store, counting its statements and commits.
    reference = {**base, "LFF_STORE_URL": store_for("reference")}
    counted = _killpoint("execute", 0, reference)
    _, err = counted.communicate()
    assert counted.returncode == 0, err
    totals = dict(part.split("=") for part in err.rsplit("killpoint totals: ", 1)[1].split())
    plan = _kill_plan({k: int(v) for k, v in totals.items()})
    want = store_snapshot(store.connect(reference["LFF_STORE_URL"]))
    assert len(want) == len(sample)
    # Each kill point on a fresh store, two at a time (the machine has two cores).
    for pair in [plan[i : i + 2] for i in range(0, len(plan), 2)]:
        runs = []
        for kind, n in pair:
            env = {**base, "LFF_STORE_URL": store_for(f"{kind}{n}")}
            runs.append((kind, n, env, _killpoint(kind, n, env)))
        for kind, n, _env, proc in runs:
            proc.communicate()
            assert proc.returncode == -signal.SIGKILL, f"the run was not killed at {kind} {n}"
        for kind, n, env, _ in runs:
            # The next run, in this process (the killed ones paid the start-up already).
            summary = run_nightly(settings_from(env), progress=False)
            assert summary.exit_code == 0, (kind, n)
            engine = store.connect(env["LFF_STORE_URL"])
            got = store_snapshot(engine)
            assert got["complaint_id"].is_unique, (kind, n)
            pd.testing.assert_frame_equal(got, want, obj=f"store after a kill at {kind} {n}")
            with engine.connect() as conn:
                current = pd.read_sql(
                    "select complaint_id, count(*) as n from taggings where is_current group by complaint_id", conn
                )
                total = pd.read_sql("select count(*) as n from taggings", conn)["n"][0]
            assert (current["n"] == 1).all() and total == len(sample), (kind, n)  # each tagged exactly once
            ledger = store.read_runs(engine)
            assert ledger["status"].iloc[0] == "success"
            # The killed run is on record unless it died before starting; none is left "running".
            assert set(ledger["status"].iloc[1:]) <= {"abandoned", "success"}, (kind, n)
            engine.dispose()


def test_a_complaints_table_in_a_database_is_a_source_and_edits_there_are_rescored(nightly_env, tmp_path):
    from sqlalchemy import create_engine, text

    source = f"sqlite:///{tmp_path / 'case_system.db'}"
    sample = pd.read_csv(sample_complaints_path(), dtype=str, keep_default_na=False).head(40)
    system = create_engine(source)
    sample.assign(received_date=pd.to_datetime(sample["received_date"]).dt.date).to_sql("cases", system, index=False)
    env = {**nightly_env["env"], "LFF_SOURCE_URL": source, "LFF_SOURCE_TABLE": "cases"}
    ctx = {**nightly_env, "env": env}
    assert _nightly(ctx).returncode == 0
    tagged = store.current_taggings(_engine(ctx)).set_index("complaint_id")
    assert set(tagged.index) == set(sample["complaint_id"])
    assert tagged.loc[sample["complaint_id"].iloc[0], "source_file"].endswith("case_system.db#cases")
    with system.begin() as conn:
        conn.execute(
            text("update cases set text = text || ' Nobody has called me back.' where complaint_id = :id"),
            {"id": sample["complaint_id"].iloc[3]},
        )
    assert _nightly(ctx).returncode == 0
    run = store.read_runs(_engine(ctx)).iloc[0]
    assert (run["rows_read"], run["changed"], run["scored"]) == (40, 1, 1)
    missing = {**nightly_env, "env": {**env, "LFF_SOURCE_TABLE": "no_such_table"}}
    result = _nightly(missing)
    assert result.returncode == 2 and "no_such_table: table not found" in result.stderr


def test_processed_exports_are_not_read_again_and_bad_rows_are_quarantined_once(nightly_env):
    sample = pd.read_csv(sample_complaints_path(), dtype=str, keep_default_na=False).head(30)
    sample.loc[2, "received_date"] = "not a date"
    sample.to_csv(nightly_env["drop"] / "monday.csv", index=False)
    assert _nightly(nightly_env).returncode == 3
    assert _nightly(nightly_env).returncode == 0  # nothing new: the quarantined row is not reported twice
    ledger = store.read_runs(_engine(nightly_env))
    assert ledger["rows_read"].tolist()[:2] == [0, 30] and ledger["quarantined"].tolist()[:2] == [0, 1]
    # A corrected re-export is read, and only the corrected complaint is new.
    time.sleep(0.05)
    sample.loc[2, "received_date"] = "2025-03-04"
    sample.to_csv(nightly_env["drop"] / "tuesday.csv", index=False)
    assert _nightly(nightly_env).returncode == 0
    run = store.read_runs(_engine(nightly_env)).iloc[0]
    assert (run["rows_read"], run["new"], run["scored"], run["unchanged"]) == (30, 1, 1, 29)


def test_learning_statuses_move_on_with_the_calendar_without_re_reading_exports(tmp_path):
    engine = store.connect(f"sqlite:///{tmp_path / 'store.db'}")
    closed = pd.Series(pd.date_range("2023-11-01", "2026-12-31", freq="3D").date)
    rows = pd.DataFrame({"complaint_id": [f"C{i}" for i in range(len(closed))], "closed_date": closed})
    first_day = dt.date(2024, 1, 2)
    stage = learning_stage(rows["closed_date"], [None] * len(rows), first_day)
    rows = rows.assign(
        text_sha256="0" * 64, details_sha256="0" * 64, received_date=closed, learning_completed_date=None, **stage
    )
    store.write_batch(engine, rows, None, "r1", "m", "1")
    for today in [dt.date(2024, 3, 28), dt.date(2024, 12, 24), dt.date(2025, 5, 2), dt.date(2026, 12, 24)]:
        from pipelines.deadlines import due_soon_before

        store.refresh_learning_status(engine, today, due_soon_before(today))
        got = store.current_taggings(engine).set_index("complaint_id").loc[rows["complaint_id"], "learning_status"]
        want = learning_stage(rows["closed_date"], [None] * len(rows), today)["learning_status"]
        assert (got.to_numpy() == want.to_numpy()).all(), today
        assert {"overdue", "due soon", "open"} <= set(got) or today.year == 2026


def test_a_new_champion_re_tags_from_the_store_unless_configured_for_new_only(nightly_env, tmp_path):
    import shutil

    from mlflow import MlflowClient

    from pipelines.tracking import configure as configure_mlflow

    # A copy of the shared MLflow store, so the shared champion is left alone.
    state = tmp_path / "state"
    shutil.copytree(nightly_env["state_dir"], state)
    ctx = {**nightly_env, "state_dir": state}
    sample = pd.read_csv(sample_complaints_path(), dtype=str, keep_default_na=False).head(25)
    sample.to_csv(nightly_env["drop"] / "export.csv", index=False)
    assert _nightly(ctx).returncode == 0
    configure_mlflow(Settings(state_dir=state))
    client = MlflowClient()
    old = client.get_model_version_by_alias("complaint-themes", "champion")
    new = client.create_model_version("complaint-themes", old.source, run_id=old.run_id)
    client.set_registered_model_alias("complaint-themes", "champion", new.version)
    only_new = {**ctx, "env": {**ctx["env"], "LFF_RETAG_ON_MODEL_CHANGE": "new"}}
    assert _nightly(only_new).returncode == 0
    assert store.read_runs(_engine(ctx)).iloc[0]["scored"] == 0
    assert _nightly(ctx).returncode == 0
    run = store.read_runs(_engine(ctx)).iloc[0]
    assert (run["rows_read"], run["scored"], run["model_version"]) == (0, 25, str(new.version))
    tagged = store.current_taggings(_engine(ctx))
    assert (tagged["model_version"] == str(new.version)).all() and len(tagged) == 25


def test_two_real_runs_at_once_one_proceeds_and_the_other_refuses(nightly_env):
    sample = pd.read_csv(sample_complaints_path(), dtype=str, keep_default_na=False)
    many = pd.concat([sample.assign(complaint_id=sample["complaint_id"] + f"-{k}") for k in range(6)])
    many.to_csv(nightly_env["drop"] / "export.csv", index=False)
    env = {
        **os.environ,
        **nightly_env["env"],
        "LFF_STATE_DIR": str(nightly_env["state_dir"]),
        "LFF_BATCH_ROWS": "4",  # many small transactions: the first run holds the lock for a while
    }
    first = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "cli.py"), "--quiet", "nightly"], env=env, stderr=subprocess.PIPE, text=True
    )
    engine = _engine(nightly_env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(store.locks.select()).first() is not None:
                break
        time.sleep(0.05)
    second = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "cli.py"), "--quiet", "nightly"], env=env, capture_output=True, text=True
    )
    assert first.poll() is None, "the first run ended before the second tried; make it slower"
    _, first_err = first.communicate(timeout=600)
    assert second.returncode == 4 and "not started: another run" in second.stderr
    assert first.returncode == 0, first_err[-2000:]
    ledger = store.read_runs(engine)
    assert len(ledger) == 1 and ledger["scored"].iloc[0] == len(many)


def test_a_version_4_store_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    from sqlalchemy import inspect, text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = store.connect(url)
    with engine.begin() as conn:  # make it as version 4 left it
        conn.execute(text("ALTER TABLE runs DROP COLUMN updated"))
        conn.execute(text("ALTER TABLE complaints DROP COLUMN acknowledged_date"))
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(text("INSERT INTO schema_version VALUES (4, '2026-01-01')"))
        conn.execute(text("INSERT INTO runs (run_id, started_at, status) VALUES ('old', '2026-01-01', 'success')"))
    engine.dispose()
    engine = store.connect(url)
    assert "updated" in {c["name"] for c in inspect(engine).get_columns("runs")}
    assert "acknowledged_date" in {c["name"] for c in inspect(engine).get_columns("complaints")}
    assert store.read_runs(engine)["run_id"].tolist() == ["old"]
