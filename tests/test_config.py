"""Settings have one door (``load_settings``: YAML, then LFF_* environment variables over it),
runtime state lives apart from the inputs, and a configured taxonomy is the one every path uses."""

import json

import pandas as pd
import pytest
import yaml

from pipelines.config import PROJECT_ROOT, Settings, load_settings
from pipelines.train import load_labelled, train
from tests.conftest import CROSSWALK


def test_environment_overrides_yaml_and_yaml_overrides_defaults(tmp_path, monkeypatch):
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump({"batch_rows": 50, "model_name": "from-yaml", "suppress_below": 3}))
    monkeypatch.setenv("LFF_BATCH_ROWS", "70")
    settings = load_settings(config)
    assert (settings.batch_rows, settings.model_name, settings.suppress_below) == (70, "from-yaml", 3)
    assert settings.report_months == Settings.model_fields["report_months"].default


def test_unknown_setting_and_missing_file_are_named(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("batch_row: 5\n")
    with pytest.raises(ValueError, match=r"typo.yaml: unknown settings \['batch_row'\]"):
        load_settings(config)
    with pytest.raises(ValueError, match="config file not found: .*absent.yaml"):
        load_settings(tmp_path / "absent.yaml")


def test_runtime_state_defaults_to_state_folder_not_the_inputs(tmp_path):
    inputs = tmp_path / "data"
    inputs.mkdir()
    settings = Settings(data_dir=inputs)
    assert settings.state == PROJECT_ROOT / "state"
    assert settings.store.endswith("/state/results.db") and "/state/mlflow/" in settings.tracking_uri
    assert Settings(data_dir=inputs, state_dir=tmp_path / "s").output_dir == tmp_path / "s" / "outputs"


def test_state_written_by_an_earlier_install_in_the_data_folder_is_still_used(tmp_path):
    (tmp_path / "results.db").write_bytes(b"")  # an earlier layout kept the store beside the inputs
    settings = Settings(data_dir=tmp_path)
    assert settings.state == tmp_path and settings.store == f"sqlite:///{(tmp_path / 'results.db').resolve()}"


def test_a_crosswalk_needs_the_taxonomy_it_maps_onto(tmp_path, public_data_dir):
    with pytest.raises(ValueError, match="give the taxonomy it maps onto"):
        load_labelled(public_data_dir / "nhs_fft_phase1.csv", "feedback", "code", crosswalk_path=CROSSWALK)


def test_configured_taxonomy_is_used_with_the_default_crosswalk(tmp_path, public_data_dir):
    """A taxonomy_file in the settings is the one the default model learns (it was once ignored
    when a crosswalk was given, while the crosswalk was honoured)."""
    taxonomy = yaml.safe_load((PROJECT_ROOT / "data" / "taxonomy.yaml").read_text())
    taxonomy["name"] = "our-council"
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(taxonomy))
    rows = pd.read_csv(public_data_dir / "nhs_fft_phase1.csv", dtype=str, keep_default_na=False).head(1500)
    rows.to_csv(tmp_path / "fft.csv", index=False)
    settings = Settings(state_dir=tmp_path / "state", taxonomy_file=tmp_path / "taxonomy.yaml", n_jobs=1)
    train(
        tmp_path / "fft.csv", "feedback", "code", crosswalk_path=CROSSWALK, model_dir=tmp_path / "m", settings=settings
    )
    info = json.loads((tmp_path / "m" / "artifacts" / "model_info.json").read_text())
    assert info["taxonomy"]["name"] == "our-council"
