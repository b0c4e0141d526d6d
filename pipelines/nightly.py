"""The nightly run: make sure a champion model exists, then tag the complaints in the drop folder.

This is the job the README's first command runs. With no configuration it uses the bundled
made-up sample in ``data/sample/``, the local MLflow store under ``data/mlflow`` and writes
tagged files to ``data/outputs``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import Settings, get_settings
from pipelines.datasets import DatasetError, dataset_path, sample_complaints_path
from pipelines.score import ScoreSummary, score_file

log = logging.getLogger(__name__)

FFT_CROSSWALK = Path("crosswalks") / "nhs_fft_phase1.yaml"


@dataclass
class NightlySummary:
    model_uri: str
    trained_default: bool
    files: list[ScoreSummary] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return max((f.exit_code for f in self.files), default=0)


def champion_uri(settings: Settings) -> str | None:
    """``models:/NAME@champion`` when the registry has a champion, else None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines.config import configure_mlflow

    configure_mlflow(settings)
    try:
        MlflowClient().get_model_version_by_alias(settings.model_name, "champion")
    except MlflowException:
        return None
    return f"models:/{settings.model_name}@champion"


def train_default_model(settings: Settings) -> str:
    """Train and register the default council model: FFT phase 1 through the crosswalk when the
    public data is there, else the bundled made-up sample (a demo model, not a useful one)."""
    from pipelines.train import train

    try:
        source = dataset_path("nhs_fft_phase1.csv", settings.public_data)
        log.info("training default model on public FFT data through the crosswalk")
        train(
            source,
            "feedback",
            "code",
            crosswalk_path=settings.data_dir / FFT_CROSSWALK,
            register=settings.model_name,
            settings=settings,
        )
    except DatasetError:
        log.warning("public FFT data not found; training a demo model on the made-up sample")
        train(
            sample_complaints_path(settings.data_dir),
            "text",
            "theme",
            taxonomy_path=settings.taxonomy_path,
            register=settings.model_name,
            settings=settings,
        )
    return f"models:/{settings.model_name}@champion"


def run_nightly(settings: Settings | None = None, progress: bool = True) -> NightlySummary:
    """Tag every export in the drop folder with the champion model (training one first if none)."""
    settings = settings or get_settings()
    model_uri = champion_uri(settings)
    trained = model_uri is None
    if trained:
        model_uri = train_default_model(settings)
    summary = NightlySummary(model_uri=model_uri, trained_default=trained)
    drop = settings.drop_folder or sample_complaints_path(settings.data_dir).parent
    outputs = settings.output_dir
    for export in sorted(p for p in Path(drop).iterdir() if p.suffix.lower() in {".csv", ".parquet", ".xlsx"}):
        summary.files.append(
            score_file(
                model_uri,
                export,
                outputs / f"{export.stem}.tagged.csv",
                settings.text_column,
                settings.id_column,
                settings=settings,
                progress=progress,
            )
        )
    return summary
