"""Bad input: one-line errors for unreadable files, quarantine with reasons for bad rows."""

import stat

import pandas as pd
import pytest

from pipelines.config import Settings
from pipelines.score import score_file
from pipelines.tables import InputError, detect_encoding
from tests.conftest import run_cli

SECRET = "Zebedee-Quartermaine"  # a marker that must never reach a log line


def _score_cli(small_model, state_dir, path, out, *extra):
    return run_cli("score", "--model", str(small_model["model_dir"]), "--input", str(path), "--text-column", "text",
                   "--output", str(out), *extra, state_dir=state_dir, env={"LFF_N_JOBS": "1"})  # fmt: skip


def test_missing_column_names_file_and_column(small_model, state_dir, tmp_path):
    path = tmp_path / "export.csv"
    pd.DataFrame({"id": [1], "comment": ["late"]}).to_csv(path, index=False)
    result = _score_cli(small_model, state_dir, path, tmp_path / "o.csv")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert str(path) in last and "'text'" in last and "comment" in last


@pytest.mark.parametrize("content", [b"", b"\n"])
def test_empty_file_is_a_one_line_error(small_model, state_dir, tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    result = _score_cli(small_model, state_dir, path, tmp_path / "o.csv")
    assert result.returncode == 2
    assert str(path) in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_windows_1252_export_is_read_correctly(small_model, state_dir, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "id,text\n1,The carer\u2019s visit was cancelled \u2013 again\n2,caf\u00e9 closed\n".encode("cp1252")
    )
    assert detect_encoding(path) == "cp1252"
    result = _score_cli(small_model, state_dir, path, tmp_path / "o.csv", "--keep-text")
    assert result.returncode == 0, result.stderr
    out = pd.read_csv(tmp_path / "o.csv")
    assert out["text"].tolist() == ["The carer\u2019s visit was cancelled \u2013 again", "caf\u00e9 closed"]
    assert "Windows-1252" in result.stderr


def test_bad_rows_are_quarantined_and_the_rest_scored(small_model, state_dir, tmp_path):
    rows = pd.DataFrame(
        {
            "id": ["a1", "a2", "a3", "a2", "", "a6", "a7"],
            "text": [
                f"Mrs {SECRET} waited six weeks for an assessment",
                "",
                "x" * 60_001,
                "duplicate of a2 with other text",
                "a row without an id",
                "   ",
                f"Nobody called {SECRET} back",
            ],
        }
    )
    path = tmp_path / "export.csv"
    rows.to_csv(path, index=False)
    out, quarantine = tmp_path / "o.csv", tmp_path / "q.csv"
    result = _score_cli(small_model, state_dir, path, out, "--id-column", "id", "--quarantine", str(quarantine))
    assert result.returncode == 3, result.stderr
    scored, held = pd.read_csv(out, dtype=str), pd.read_csv(quarantine, dtype=str, keep_default_na=False)
    assert len(scored) + len(held) == len(rows)
    assert scored["id"].tolist() == ["a1", "a7"]
    reasons = dict(zip(held["id"], held["_reason"]))
    assert sorted(held.loc[held["id"] == "a2", "_reason"]) == ["duplicate id 'a2' (first at row 2)", "empty text"]
    assert reasons["a3"].startswith("text longer than")
    assert reasons[""] == "missing id"
    assert reasons["a6"] == "empty text"
    assert set(held["source_row"]) == {"2", "3", "4", "5", "6"}
    assert set(held["_column"]) == {"text", "id"}
    assert SECRET not in result.stderr and SECRET not in result.stdout
    # The output's text is redacted; the quarantine keeps rows as read, for its owner's eyes only.
    assert scored["text"].tolist() == ["Mrs [NAME] waited six weeks for an assessment", f"Nobody called {SECRET} back"]
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o600


def test_malformed_csv_line_goes_to_quarantine(small_model, tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text('id,text\n1,late visit\n2,"too, many",fields,here\n3,no call back\n')
    settings = Settings(n_jobs=1)
    summary = score_file(
        str(small_model["model_dir"]), path, tmp_path / "o.csv", "text", "id", settings=settings, progress=False
    )
    assert (summary.rows_scored, summary.rows_quarantined) == (2, 1)
    held = pd.read_csv(summary.quarantine)
    assert held["_reason"][0] == "malformed CSV record, line 3: wrong number of fields (4, the header has 2)"
    assert held["_raw"][0] == '2,"too, many",fields,here\n' and held["_lines"][0] == 3


def test_truncated_file_last_row_is_quarantined(small_model, tmp_path):
    path = tmp_path / "cut.csv"
    path.write_text("id,text,service\n1,late visit,North\n2,no call back,South\n3")
    summary = score_file(
        str(small_model["model_dir"]),
        path,
        tmp_path / "o.csv",
        "text",
        "id",
        settings=Settings(n_jobs=1),
        progress=False,
    )
    assert (summary.rows_in, summary.rows_scored, summary.rows_quarantined) == (3, 2, 1)


def test_unsupported_file_type(tmp_path, small_model):
    path = tmp_path / "notes.docx"
    path.write_bytes(b"PK")
    with pytest.raises(InputError, match="unsupported file type"):
        score_file(
            str(small_model["model_dir"]),
            path,
            tmp_path / "o.csv",
            "text",
            settings=Settings(n_jobs=1),
            progress=False,
        )


def test_training_with_an_unknown_theme_names_the_row(tmp_path, state_dir):
    path = tmp_path / "labelled.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "theme": ["communication", "communication", "parking"]}).to_csv(
        path, index=False
    )
    result = run_cli("train", "--input", str(path), "--text-column", "text", "--label-column", "theme",
                     "--taxonomy", "data/taxonomy.yaml", state_dir=state_dir)  # fmt: skip
    assert result.returncode == 2
    assert "row 2, column 'theme': unknown theme 'parking'" in result.stderr
