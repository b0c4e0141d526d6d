"""The Spark engine gives the local scorer's answers, row for row, with the same model, and
quarantines the same bad rows with the same reasons."""

import numpy as np
import pandas as pd

from tests.conftest import run_cli

COMPARED = ["theme", "themes", "needs_review", "evidence", "feedback_type"]


def test_spark_and_local_engines_agree_on_10000_real_comments(council_model, fft, tmp_path, state_dir):
    comments = pd.DataFrame(
        {"comment_id": [f"F{i}" for i in range(10_000)], "text": fft["feedback"].head(10_000).to_numpy()}
    )
    # The export's feedback type, as both engines take it: stated, stated in other case, or empty.
    comments["kind"] = np.resize(["complaint", "", "Compliment", ""], len(comments))
    bad = pd.DataFrame(
        {
            "comment_id": ["BAD-EMPTY", "F17", "", "BAD-BIG", "BAD-TYPE"],
            "text": ["   ", "again", "no id here", "x " * 30_000, "When does it open?"],
            "kind": ["", "", "", "", "enquiry"],
        }
    )
    source = tmp_path / "comments.parquet"
    pd.concat([comments, bad], ignore_index=True).to_parquet(source, index=False)
    common = ["--model", str(council_model["model_dir"]), "--input", str(source), "--text-column", "text"]
    common += ["--id-column", "comment_id", "--feedback-type-column", "kind"]
    local = run_cli("score", *common, "--output", str(tmp_path / "local.parquet"), state_dir=state_dir)
    assert local.returncode == 3, local.stderr
    spark = run_cli(
        "score", *common, "--engine", "spark", "--spark-master", "local[2]", "--output", str(tmp_path / "spark"),
        state_dir=state_dir,
    )  # fmt: skip
    assert spark.returncode == 3, spark.stderr
    assert "10005 rows read, 10000 tagged" in spark.stderr
    ours = pd.read_parquet(tmp_path / "local.parquet").set_index("comment_id").sort_index()
    theirs = pd.read_parquet(tmp_path / "spark").set_index("comment_id").sort_index()
    assert list(theirs.columns) == list(ours.columns) and len(theirs) == len(ours) == 10_000
    pd.testing.assert_frame_equal(theirs[COMPARED], ours[COMPARED], check_dtype=False)
    assert np.abs(theirs["theme_confidence"] - ours["theme_confidence"]).max() <= 1e-9
    stated = theirs["kind"].str.lower()
    assert (theirs.loc[stated != "", "feedback_type"] == stated[stated != ""]).all()
    # The same bad rows, with the same reasons, in both quarantines.
    local_bad = pd.read_csv(tmp_path / "local.quarantine.csv", dtype=str, keep_default_na=False)
    spark_bad = pd.read_parquet(tmp_path / "spark.quarantine")
    assert sorted(zip(local_bad["source_row"].astype(int), local_bad["_reason"])) == sorted(
        zip(spark_bad["source_row"].astype(int), spark_bad["_reason"])
    )
    assert len(spark_bad) == 5 and "'enquiry' is not a feedback type" in " ".join(spark_bad["_reason"])


def test_spark_engine_without_pyspark_says_what_to_install(council_model, tmp_path, state_dir):
    # A Python whose import of pyspark fails, as on a core install.
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "pyspark.py").write_text("raise ImportError('no pyspark here')\n")
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": ["The carer was late."]}).to_csv(source, index=False)
    result = run_cli(
        "score", "--engine", "spark", "--model", str(council_model["model_dir"]), "--input", str(source),
        "--text-column", "text", "--output", str(tmp_path / "out"),
        env={"PYTHONPATH": str(blocker)}, state_dir=state_dir,
    )  # fmt: skip
    assert result.returncode == 2 and "pip install -e '.[spark]'" in result.stderr


def test_spark_reads_csv_like_the_local_engine(council_model, fft, tmp_path, state_dir):
    """Malformed CSV records are quarantined by both engines with the same rows and reasons
    (Spark's own CSV reader would fill nulls instead), and the good rows get the same tags."""
    lines = [f'F{i},"{text.replace(chr(34), chr(39))}"' for i, text in enumerate(fft["feedback"].head(2_000))]
    lines[100] = 'F100,"a quote that never closes'
    lines[500] = "F500,too,many,fields"
    lines[900] = "F900,a NUL \x00 inside"
    lines[1500] = "comment_id,text"  # a second export pasted in: skipped, not scored
    lines.insert(1200, "F17,a duplicate id")
    source = tmp_path / "comments.csv"
    source.write_text("comment_id,text\n" + "\n".join(lines) + "\n", encoding="utf-8")
    common = ["--model", str(council_model["model_dir"]), "--input", str(source), "--text-column", "text"]
    common += ["--id-column", "comment_id"]
    local = run_cli("score", *common, "--output", str(tmp_path / "local.parquet"), state_dir=state_dir)
    assert local.returncode == 3, local.stderr
    spark = run_cli(
        "score", *common, "--engine", "spark", "--spark-master", "local[2]", "--output", str(tmp_path / "spark"),
        state_dir=state_dir,
    )  # fmt: skip
    assert spark.returncode == 3, spark.stderr
    assert "2000 rows read, 1996 tagged" in spark.stderr and "2000 rows read, 1996 tagged" in local.stderr
    ours = pd.read_parquet(tmp_path / "local.parquet").set_index("comment_id").sort_index()
    theirs = pd.read_parquet(tmp_path / "spark").set_index("comment_id").sort_index()
    pd.testing.assert_frame_equal(theirs[["text", *COMPARED]], ours[["text", *COMPARED]], check_dtype=False)
    local_bad = pd.read_csv(tmp_path / "local.quarantine.csv", dtype=str, keep_default_na=False)
    spark_bad = pd.read_parquet(tmp_path / "spark.quarantine")
    expected = sorted(zip(local_bad["source_row"].astype(int), local_bad["_reason"]))
    assert sorted(zip(spark_bad["source_row"].astype(int), spark_bad["_reason"])) == expected
    assert [reason.split(": ", 1)[-1][:12] for _, reason in expected] == [
        "bad quoting ", "wrong number", "NUL characte", "duplicate id"
    ]  # fmt: skip
