"""The notebooks run end to end on real public data (papermill executes every cell; a failing
cell fails the test), are paired with their jupytext scripts, and are committed without outputs."""

from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

from pipelines.config import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


@pytest.mark.parametrize("name", ["retrain", "explore_themes"])
def test_notebook_is_paired_and_has_no_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    script = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert [c.source for c in notebook.cells] == [c.source for c in script.cells], (
        "run: jupytext --sync notebooks/*.ipynb"
    )
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "strip outputs before committing"
    assert any("parameters" in c.metadata.get("tags", []) for c in notebook.cells)


def _run(name: str, parameters: dict) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / f"{name}.executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, cwd=str(PROJECT_ROOT), progress_bar=False
    )
    return out


@pytest.mark.slow
def test_retrain_notebook_trains_registers_and_promotes_on_real_data(tmp_path, public_data_dir):
    out = _run(
        "retrain",
        {
            "state_dir": str(tmp_path),
            "labelled_file": str(public_data_dir / "nhs_fft_phase1.csv"),
            "use_corrections": True,
        },
    )
    text = out.read_text()
    assert "models:/complaint-themes/1 -> champion: already the champion" in text  # the first model
    assert (tmp_path / "evaluation" / "complaint-themes-v1.csv").is_file()


@pytest.mark.slow
def test_explore_notebook_runs_on_real_feedback(tmp_path, public_data_dir):
    out = _run(
        "explore_themes", {"state_dir": str(tmp_path), "public_data_dir": str(public_data_dir), "demo_rows": 1500}
    )
    text = out.read_text()
    assert "model and people agree on" in text and "complaints and compliments in the store" in text
