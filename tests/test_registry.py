"""The promotion gate on real data: a model trained on 10% of the data is refused, one trained
on all of it is promoted, and the alias history records both decisions."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines import store
from pipelines.config import Settings
from pipelines.registry import gate
from pipelines.tracking import configure as configure_mlflow
from tests.conftest import CROSSWALK, run_cli, run_cli_in_process


def test_the_gate_rule():
    champion = {"macro_f1": 0.60, "per_theme_f1": {"a": 0.7, "b": 0.5}}
    assert gate({"macro_f1": 0.595, "per_theme_f1": {"a": 0.69, "b": 0.46}}, champion, 0.01, 0.05)[0]
    refused, reason = gate({"macro_f1": 0.62, "per_theme_f1": {"a": 0.9, "b": 0.40}}, champion, 0.01, 0.05)
    assert not refused and "F1 of b drops from 0.500 to 0.400" in reason
    assert not gate({"macro_f1": 0.55, "per_theme_f1": {"a": 0.7, "b": 0.5}}, champion, 0.01, 0.05)[0]
    assert gate({"macro_f1": 0.1, "per_theme_f1": {}}, None, 0.01, 0.05) == (True, "no champion yet")


@pytest.mark.slow
def test_a_worse_candidate_is_refused_and_a_better_one_promoted(tmp_path, fft, public_data_dir):
    state = tmp_path / "state"
    evaluation = tmp_path / "evaluation" / "fft-v1.csv"
    env = {"LFF_EVALUATION_FILE": str(evaluation), "LFF_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    source = public_data_dir / "nhs_fft_phase1.csv"
    made = run_cli(
        "evaluation-set", "--input", str(source), "--text-column", "feedback", "--label-column", "code",
        "--crosswalk", str(CROSSWALK), "--output", str(evaluation), env=env, state_dir=state,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    held = pd.read_csv(evaluation, dtype=str)
    assert 0.08 < len(held) / len(fft) < 0.25 and set(held["theme"]) >= {"communication", "quality_of_service"}

    def trained_on(share: float, name: str) -> str:
        path = tmp_path / f"{name}.csv"
        fft.sample(frac=share, random_state=1).to_csv(path, index=False)
        result = run_cli_in_process(  # in this process: the three trainings are the test, not start-up
            "train", "--input", str(path), "--text-column", "feedback", "--label-column", "code",
            "--crosswalk", str(CROSSWALK), "--register", "gate-test", env=env, state_dir=state,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert '"in the evaluation set": ' in result.stderr  # training never sees the evaluation texts
        return result.stdout.rsplit("registered gate-test version ", 1)[1].split()[0]

    first = trained_on(0.3, "thirty")  # the first registered model becomes champion
    worse = trained_on(0.1, "ten")
    refused = run_cli_in_process("promote", "--candidate", f"models:/gate-test/{worse}", env=env, state_dir=state)
    assert refused.returncode == 5, refused.stderr
    assert f"version {worse} -> challenger" in refused.stdout
    better = trained_on(1.0, "all")
    promoted = run_cli("promote", "--candidate", f"models:/gate-test/{better}", env=env, state_dir=state)
    assert promoted.returncode == 0, promoted.stderr
    assert f"version {better} -> champion" in promoted.stdout
    configure_mlflow(Settings(state_dir=state))
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("gate-test", "champion").version) == better
    assert str(client.get_model_version_by_alias("gate-test", "challenger").version) == worse
    assert client.get_model_version("gate-test", worse).tags["promotion.decision"] == "challenger"
    history = store.read_alias_history(store.connect(env["LFF_STORE_URL"]), "gate-test")
    assert history[["version", "alias", "previous_champion"]].fillna("").values.tolist() == [
        [first, "champion", ""],  # the first model is a decision too: who, when and why
        [worse, "challenger", first],
        [better, "champion", first],
    ]
    assert history["reason"].iloc[0].startswith("first model") and history["decided_by"].iloc[0]
    metrics = json.loads(history["metrics"].iloc[2])
    assert metrics["candidate"]["macro_f1"] > metrics["champion"]["macro_f1"]
    assert "below the champion" in history["reason"].iloc[1] or "drops from" in history["reason"].iloc[1]
    # Each registered model has its card, in models/ and in MLflow.
    card = (Path(os.environ["LFF_MODELS_DIR"]) / f"gate-test-v{better}.md").read_text()
    assert "## Known limits" in card and "## Intended use" in card and "| communication |" in card
    assert "fft-v1.csv@" in card and "trust not seen in training" in card
    run_id = client.get_model_version("gate-test", better).run_id
    assert "model_card.md" in [a.path for a in client.list_artifacts(run_id)]
    listing = run_cli("aliases", env=env, state_dir=state)
    assert "challenger" in listing.stdout and "champion" in listing.stdout
    bad = run_cli("promote", "--candidate", "gate-test/2", env=env, state_dir=state)
    assert bad.returncode == 2 and "must be models:/NAME/VERSION" in bad.stderr
