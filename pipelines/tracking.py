"""The one door to MLflow: where runs, models, the registry and its aliases are read and written.

Every other module asks this one (the pyfunc model code in ``themes.ThemeModel`` aside), so
the tracking store, the champion lookup and the model's saved form are each written once.
``import mlflow`` is deferred to the functions: it takes seconds, and most commands that
import the package (``--help``, validation, reports without a model) never need it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.schema import FEEDBACK_TYPE_INPUT, OUTPUT_SCHEMA
from pipelines.tables import InputError
from pipelines.themes import INFO_ARTIFACT, PIPELINE_ARTIFACT, save_pipeline

CHAMPION = "champion"
CHALLENGER = "challenger"
# Made up, so that no real complaint text is ever stored as the model's input example.
INPUT_EXAMPLE = pd.DataFrame(
    {"text": ["Nobody called me back about my mother's care package, and the carer was late again."]}
)
# What a served model needs installed: these dependencies of the project, with the lower
# bounds pyproject.toml gives them (read from the installed package's metadata).
SERVING_PACKAGES = (
    "scikit-learn",
    "numpy",
    "scipy",
    "pandas",
    "spacy",
    "skops",
    "pyyaml",
    "pydantic-settings",
    "mlflow",
)
_LOADED: dict = {}  # model path -> loaded pyfunc model, one per worker process


def configure(settings: Settings) -> str:
    """Point MLflow at the project's store and return the experiment id (created if new)."""
    import mlflow

    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(settings.experiment_name, artifact_location=settings.artifact_location)


def pip_requirements() -> list[str]:
    """The serving packages' requirement lines from the project's own metadata (pyproject.toml)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    wanted = {}
    for line in requires("learning-from-feedback") or []:
        requirement = Requirement(line)
        if requirement.marker is None and requirement.name in SERVING_PACKAGES:
            wanted[requirement.name] = f"{requirement.name}{requirement.specifier}"
    missing = sorted(set(SERVING_PACKAGES) - set(wanted))
    if missing:
        raise RuntimeError(f"pyproject.toml's dependencies lack {missing}; reinstall with pip install -e .")
    return [wanted[name] for name in SERVING_PACKAGES]


def model_signature():
    """The model's inputs (text, optional feedback type) and outputs (:data:`schema.OUTPUT_SCHEMA`)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = Schema([ColSpec(kind, name) for name, kind in OUTPUT_SCHEMA])
    # feedback_type is optional: what the export says the row is (complaint, compliment, ...).
    inputs = Schema([ColSpec("string", "text"), ColSpec("string", FEEDBACK_TYPE_INPUT, required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _model_files(pipeline, info: dict, folder: Path) -> dict:
    """What ``log_model`` and ``save_model`` take to write the project's model."""
    import json

    save_pipeline(pipeline, folder / PIPELINE_ARTIFACT)
    (folder / INFO_ARTIFACT).write_text(json.dumps(info, indent=2, default=str))
    return {
        "python_model": str(PROJECT_ROOT / "pipelines" / "pyfunc_entry.py"),
        "artifacts": {"pipeline": str(folder / PIPELINE_ARTIFACT), "info": str(folder / INFO_ARTIFACT)},
        "signature": model_signature(),
        "input_example": INPUT_EXAMPLE,
        "pip_requirements": pip_requirements(),
        "code_paths": [str(PROJECT_ROOT / "pipelines")],
    }


def save_model_dir(pipeline, info: dict, path: Path) -> Path:
    """Write the MLflow model folder (loadable with ``load_model(path)``), replacing any there."""
    import shutil

    import mlflow.pyfunc

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pyfunc.save_model(path=str(path), **_model_files(pipeline, info, Path(tmp)))
    return path


@dataclass(frozen=True)
class ThemeRun:
    """What a training run records: tags, parameters, metrics, the evaluation (JSON) and figures."""

    tags: dict
    params: dict
    metrics: dict
    evaluation: dict
    figures: dict  # artifact path -> matplotlib Figure


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    model_uri: str
    version: str | None  # the registered version, when registered


def log_theme_model(
    settings: Settings, run: ThemeRun, pipeline, info: dict, register: str | None = None
) -> LoggedModel:
    """One MLflow run holding the training record and the model; registered under ``register``."""
    import mlflow

    experiment_id = configure(settings)
    with mlflow.start_run(experiment_id=experiment_id) as active, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags(run.tags)
        mlflow.log_params(run.params)
        mlflow.log_metrics(run.metrics)
        mlflow.log_dict(run.evaluation, "evaluation/metrics.json")
        for artifact, figure in run.figures.items():
            mlflow.log_figure(figure, artifact)
        model_info = mlflow.pyfunc.log_model(
            name="model", registered_model_name=register, **_model_files(pipeline, info, Path(tmp))
        )
    version = str(model_info.registered_model_version) if register else None
    return LoggedModel(active.info.run_id, model_info.model_uri, version)


def log_text(run_id: str, text: str, artifact: str) -> None:
    """Add a text artifact (e.g. the model card) to an existing run."""
    from mlflow import MlflowClient

    MlflowClient().log_text(run_id, text, artifact)


def log_grouping(settings: Settings, metrics: dict, params: dict, state_file: Path) -> str:
    """A learning-groups run: counts as metrics, the encoder as parameters, the saved state."""
    import mlflow

    experiment_id = configure(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name="learning-groups") as run:
        mlflow.set_tag("kind", "learning-groups")
        mlflow.log_metrics(metrics)
        mlflow.log_params(params)
        mlflow.log_artifact(str(state_file), artifact_path="grouping")
    return run.info.run_id


# -- the registry: versions, aliases, the champion ------------------------------------------
def alias_version(settings: Settings, name: str, alias: str = CHAMPION) -> str | None:
    """The version holding ``alias`` (e.g. the champion), or None when no version does."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure(settings)
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion(settings: Settings) -> tuple[str, str] | None:
    """(``models:/NAME@champion``, its version) for the configured model, else None."""
    version = alias_version(settings, settings.model_name)
    return None if version is None else (f"models:/{settings.model_name}@{CHAMPION}", version)


def version_exists(settings: Settings, name: str, version: str) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure(settings)
    try:
        MlflowClient().get_model_version(name, version)
    except MlflowException:
        return False
    return True


def set_alias(settings: Settings, name: str, alias: str, version: str, tags: dict | None = None) -> None:
    """Give ``version`` the alias, and tag the version (e.g. why it was promoted)."""
    from mlflow import MlflowClient

    configure(settings)
    client = MlflowClient()
    client.set_registered_model_alias(name, alias, version)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)


def champion_record(settings: Settings) -> dict | None:
    """The champion's version, its training run's evaluation (metrics.json) and parameters;
    None when there is no champion or its run cannot be read."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure(settings)
    try:
        client = MlflowClient()
        version = client.get_model_version_by_alias(settings.model_name, CHAMPION)
        evaluation = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/evaluation/metrics.json")
        params = client.get_run(version.run_id).data.params
    except (MlflowException, OSError):
        return None
    return {"version": str(version.version), "run_id": version.run_id, "evaluation": evaluation, "params": params}


# -- loading models ---------------------------------------------------------------------------
def resolve_model(model_uri: str, settings: Settings) -> str:
    """A local directory holding the MLflow model (downloaded once from the registry if needed)."""
    if Path(model_uri).is_dir():
        return str(Path(model_uri).resolve())
    import mlflow
    from mlflow.exceptions import MlflowException

    configure(settings)
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    except MlflowException as err:
        raise InputError(f"model {model_uri!r} not found in {settings.tracking_uri}: {err}") from None


def load_model(model_path: str):
    """The pyfunc model in a local folder, loaded once per process."""
    if model_path not in _LOADED:
        import mlflow.pyfunc

        _LOADED[model_path] = mlflow.pyfunc.load_model(model_path)
    return _LOADED[model_path]


def spark_udf(spark, model_path: str, result_type):
    """The model as a Spark UDF, run in the workers' own Python (no environment rebuilt)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.spark_udf(spark, model_path, result_type=result_type, env_manager="local")
