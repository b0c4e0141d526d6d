"""The README's first command: the nightly run on the embedded defaults."""

import pandas as pd

from pipelines.datasets import sample_complaints_path
from tests.conftest import run_cli


def test_nightly_trains_default_model_on_public_data_then_tags_the_sample(tmp_path):
    result = run_cli("nightly", state_dir=tmp_path)
    assert result.returncode in (0, 3), result.stderr
    assert "public FFT data" in result.stderr
    tagged = pd.read_csv(tmp_path / "outputs" / "complaints.tagged.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(sample_complaints_path(), dtype=str, keep_default_na=False)
    assert tagged["complaint_id"].tolist() == sample["complaint_id"].tolist()
    assert set(tagged["theme"]) <= {
        "quality_of_service",
        "communication",
        "process_not_followed",
        "general_service",
        "staff_behaviour",
    }
    assert set(tagged["feedback_type"]) == {"complaint", "compliment"}
    # The human-assigned theme and type in the export are kept apart from the model's.
    assert tagged["theme_input"].tolist() == sample["theme"].tolist()
    # A model trained on NHS feedback, applied to council text: most of the made-up sample's
    # complaints and compliments should still be told apart (not evidence of accuracy).
    agree = tagged["feedback_type"] == sample["feedback_type"]
    assert agree[sample["feedback_type"] == "complaint"].mean() > 0.85
    assert agree[sample["feedback_type"] == "compliment"].mean() > 0.6
    # A second night reuses the registered champion instead of training again.
    again = run_cli("--quiet", "nightly", state_dir=tmp_path)
    assert again.returncode in (0, 3), again.stderr
    assert "training default model" not in again.stderr


def test_nightly_without_public_data_trains_a_demo_model_on_the_sample(tmp_path):
    empty = tmp_path / "no_public_data"
    empty.mkdir()
    result = run_cli("nightly", state_dir=tmp_path, env={"LFF_PUBLIC_DATA_DIR": str(empty)})
    assert result.returncode in (0, 3), result.stderr
    assert "made-up sample" in result.stderr
    tagged = pd.read_csv(tmp_path / "outputs" / "complaints.tagged.csv")
    assert len(tagged) == len(pd.read_csv(sample_complaints_path()))
