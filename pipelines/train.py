"""Training: build the labelled set, evaluate honestly on held-out data, fit, log to MLflow.

Metrics always come from data the evaluated model did not see (a stratified hold-out, or
k-fold cross-validation); the logged model is then refit on all labelled rows.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.base import clone
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.preprocessing import MultiLabelBinarizer

from pipelines import tracking
from pipelines.config import PROJECT_ROOT, Settings
from pipelines.datasets import FFT_CROSSWALK, FFT_FILE, dataset_path, sha256_of
from pipelines.tables import InputError, read_table
from pipelines.taxonomy import Crosswalk, Taxonomy
from pipelines.themes import (
    LABEL_SEPARATOR,
    make_pipeline,
    tag,
)

log = logging.getLogger(__name__)


@dataclass
class LabelledData:
    """Texts and their labels (themes, ``;``-joined when multi-label), plus what was dropped and why."""

    texts: pd.Series
    labels: pd.Series
    multi_label: bool
    feedback_types: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    source_sha256: str = ""
    taxonomy: Taxonomy | None = None
    sub_labels: pd.Series | None = None  # finer labels that roll up to ``labels``, when known
    sub_label_source: str = ""
    origin: pd.Series | None = None  # where each row came from, when sources are combined
    weights: pd.Series | None = None  # each row's weight in the fit, when sources are combined


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    metrics: dict
    registered_version: str | None = None
    model_dir: Path | None = None
    sub_themes: list[str] = field(default_factory=list)
    sub_labels_from: str = ""


def load_labelled(
    input_path: str | Path | pd.DataFrame,
    text_column: str,
    label_column: str,
    multi_label: bool = False,
    taxonomy_path: str | Path | None = None,
    crosswalk_path: str | Path | None = None,
    sub_label_column: str | None = None,
) -> LabelledData:
    """Read a labelled export and resolve its labels to themes.

    With a crosswalk, ``label_column`` holds the other framework's codes and they are mapped
    onto the taxonomy (which the caller names); with only a taxonomy, labels
    must be its themes or sub-themes (sub-themes roll up); with neither, labels are used as
    they are, so any taxonomy can be learned.

    The finer labels the model also learns (single-label only) are ``sub_label_column`` when
    given, else the crosswalk's codes, else the taxonomy sub-themes the labels named.
    ``input_path`` may also be a frame already in memory (e.g. the store's labelled complaints).
    """
    required = [text_column, label_column, *([sub_label_column] if sub_label_column else [])]
    input_path, frame, source_sha256 = _labelled_table(input_path, required)
    if sub_label_column and multi_label:
        raise InputError(f"{input_path}: --sub-label-column is for single-label training, not --multi-label")
    dropped = {}
    taxonomy = None
    if crosswalk_path and not taxonomy_path:
        raise ValueError(f"crosswalk {crosswalk_path}: give the taxonomy it maps onto (taxonomy_path)")
    if taxonomy_path:
        taxonomy = Taxonomy.from_file(taxonomy_path)
    empty_text = frame[text_column].str.strip() == ""
    dropped["empty text"] = int(empty_text.sum())
    frame = frame[~empty_text]
    if crosswalk_path:
        crosswalk = Crosswalk.from_file(crosswalk_path)
        before = len(frame)
        frame = crosswalk.apply(
            frame.rename(columns={label_column: crosswalk.source_column})
            if label_column != crosswalk.source_column
            else frame,
            taxonomy,
            label_column="_theme",
        )
        dropped["not mapped by crosswalk (neutral, excluded code or polarity)"] = before - len(frame)
        labels = frame["_theme"]
        multi_label = False
        sub_labels, sub_source = frame[crosswalk.source_column], f"crosswalk codes ({crosswalk.framework})"
    else:
        empty_label = frame[label_column].str.strip() == ""
        dropped["empty label"] = int(empty_label.sum())
        frame = frame[~empty_label]
        labels = frame[label_column].str.strip()
        sub_labels, sub_source = None, ""
        if taxonomy is not None:
            if not multi_label:
                sub_labels, sub_source = labels, "taxonomy sub-themes"
            labels = taxonomy.resolve_labels(labels, multi_label=multi_label, source=str(input_path))
        elif multi_label:
            labels = labels.map(
                lambda v: LABEL_SEPARATOR.join(p.strip() for p in v.split(LABEL_SEPARATOR) if p.strip())
            )
    if frame.empty:
        raise InputError(f"{input_path}: no labelled rows left to train on (dropped: {dropped})")
    if sub_label_column:
        sub_labels, sub_source = frame[sub_label_column], f"column {sub_label_column}"
    return LabelledData(
        texts=frame[text_column].reset_index(drop=True),
        labels=labels.reset_index(drop=True),
        multi_label=multi_label,
        feedback_types=taxonomy.feedback_type_of() if taxonomy else {},
        dropped=dropped,
        source_sha256=source_sha256,
        taxonomy=taxonomy,
        sub_labels=None if sub_labels is None else sub_labels.reset_index(drop=True),
        sub_label_source=sub_source if sub_labels is not None else "",
    )


def _labelled_table(source, required: list[str]) -> tuple[str | Path, pd.DataFrame, str]:
    """(name for messages, the rows as text, sha256) of a labelled file or frame."""
    if not isinstance(source, pd.DataFrame):
        return Path(source), read_table(source, required), sha256_of(source)
    missing = [c for c in required if c not in source.columns]
    if missing:
        raise InputError(f"the training set has no column {missing[0]!r}; columns are: {', '.join(source.columns)}")
    frame = source.fillna("").astype(str)
    return "the training set", frame, frame_sha256(frame[required])


def frame_sha256(frame: pd.DataFrame) -> str:
    """A fingerprint of a frame's content (its values, row by row, in order)."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def public_labelled(settings: Settings, taxonomy_path: str | Path | None = None) -> LabelledData:
    """The public NHS feedback (FFT phase 1) mapped onto the taxonomy by the default crosswalk."""
    return load_labelled(
        dataset_path(FFT_FILE, settings.public_data),
        "feedback",
        "code",
        taxonomy_path=taxonomy_path or settings.taxonomy_path,
        crosswalk_path=settings.data_dir / FFT_CROSSWALK,
    )


def example_labelled(taxonomy: Taxonomy) -> LabelledData:
    """The taxonomy's example texts as labelled rows (sub-labels: where each was listed)."""
    rows = taxonomy.example_rows()
    return LabelledData(texts=rows["text"], labels=rows["theme"], multi_label=False, sub_labels=rows["sub_label"])


def with_training_sources(
    data: LabelledData, settings: Settings, add_public_data: bool = False, taxonomy_path=None
) -> LabelledData:
    """What training learns from: ``data``, plus the taxonomy's examples, plus (with
    ``add_public_data``) the public feedback through the default crosswalk. The input's own
    rows then weigh ``settings.council_weight`` each against a public row, so that a
    council's labels take over as they grow; each example weighs ``settings.example_weight``."""
    if data.multi_label:
        if add_public_data:
            raise InputError("--add-public-data is for single-label council themes, not --multi-label")
        return data
    parts = [(data, "input", settings.council_weight if add_public_data else 1.0)]
    if add_public_data:
        parts.append((public_labelled(settings, taxonomy_path), "public", 1.0))
    if data.taxonomy is not None and data.taxonomy.examples:
        parts.append((example_labelled(data.taxonomy), "taxonomy examples", settings.example_weight))
    return data if len(parts) == 1 else _combined(parts)


def _combined(parts: list[tuple[LabelledData, str, float]]) -> LabelledData:
    """One labelled set from several, with each row's origin and weight."""
    from dataclasses import replace

    first = parts[0][0]
    sizes = [len(p.texts) for p, _, _ in parts]
    sources = [p.sub_label_source or name for p, name, _ in parts]
    return replace(
        first,
        texts=_joined([p.texts for p, _, _ in parts]),
        labels=_joined([p.labels for p, _, _ in parts]),
        sub_labels=_joined([p.labels if p.sub_labels is None else p.sub_labels for p, _, _ in parts]),
        sub_label_source=" + ".join(dict.fromkeys(sources)),
        origin=pd.Series(np.repeat([name for _, name, _ in parts], sizes), dtype=object),
        weights=pd.Series(np.repeat([w for _, _, w in parts], sizes), dtype=np.float64),
        dropped={**first.dropped, **{f"{n}: {k}": v for p, n, _ in parts[1:] for k, v in p.dropped.items()}},
    )


def _joined(columns) -> pd.Series:
    return pd.concat([pd.Series(c, dtype=object) for c in columns], ignore_index=True)


def _label_matrix(labels, classes) -> np.ndarray:
    return MultiLabelBinarizer(classes=list(classes)).fit_transform([str(v).split(LABEL_SEPARATOR) for v in labels])


def evaluate(
    pipeline,
    texts: pd.Series,
    labels: pd.Series,
    multi_label: bool,
    holdout: float = 0.2,
    cv: int | None = None,
    random_state: int = 42,
    sub_labels: pd.Series | None = None,
    weights: pd.Series | None = None,
    eligible: np.ndarray | None = None,
) -> dict:
    """Out-of-sample predictions and metrics: hold-out (default) or k-fold cross-validation.
    ``sub_labels`` and ``weights`` are passed to the classifier's fit (see ``ThemeClassifier.fit``);
    with ``eligible`` (a mask) only those rows are ever held out: the others (public data,
    taxonomy examples) are always trained on, so the metrics are about the input's own rows."""
    parts = []
    for train_idx, test_idx in _splits(labels, multi_label, holdout, cv, random_state, eligible):
        model = clone(pipeline).fit(
            texts.iloc[train_idx], labels.iloc[train_idx], **_fit_params(sub_labels, train_idx, weights)
        )
        out = tag(model, texts.iloc[test_idx])
        out["true"] = labels.iloc[test_idx].to_numpy()
        parts.append(out)
    predictions = pd.concat(parts, ignore_index=True)
    return {
        "predictions": predictions,
        **metrics_from_predictions(predictions, multi_label),
    }


def _splits(labels: pd.Series, multi_label: bool, holdout: float, cv, random_state: int, eligible) -> list:
    """(train rows, test rows) pairs; test rows only among ``eligible``, stratified when every
    theme has enough rows for it."""
    rows = np.arange(len(labels)) if eligible is None else np.flatnonzero(eligible)
    always = np.setdiff1d(np.arange(len(labels)), rows)
    y = labels.iloc[rows]
    stratify = not multi_label and y.value_counts().min() >= (cv or 2)
    if cv:
        splitter = (
            StratifiedKFold(cv, shuffle=True, random_state=random_state)
            if stratify
            else KFold(cv, shuffle=True, random_state=random_state)
        )
        pairs = list(splitter.split(rows, y if stratify else None))
    else:
        try:
            pairs = [train_test_split(np.arange(len(rows)), test_size=holdout, stratify=y if stratify else None,
                                      random_state=random_state)]  # fmt: skip
        except ValueError:  # too few rows per theme for a stratified hold-out
            pairs = [train_test_split(np.arange(len(rows)), test_size=holdout, random_state=random_state)]
    return [(np.sort(np.concatenate([always, rows[a]])), rows[b]) for a, b in pairs]


def _fit_params(sub_labels: pd.Series | None, rows=None, weights: pd.Series | None = None) -> dict:
    params = {}
    for name, values in (("sub_labels", sub_labels), ("sample_weight", weights)):
        if values is not None:
            params[f"classifier__{name}"] = (values if rows is None else values.iloc[rows]).to_numpy()
    if "classifier__sub_labels" in params:
        params["classifier__sub_labels"] = params["classifier__sub_labels"].astype(object)
    return params


def _sub_themes_learned(classifier) -> list:
    sub = getattr(classifier, "sub_classes_", None)
    return [] if sub is None else list(sub)


def metrics_from_predictions(predictions: pd.DataFrame, multi_label: bool) -> dict:
    """Macro/micro F1, per-theme precision/recall/F1, and how the review threshold did."""
    if multi_label:
        classes = sorted({c for v in predictions["true"] for c in str(v).split(LABEL_SEPARATOR)})
        y_true, y_pred = (
            _label_matrix(predictions["true"], classes),
            _label_matrix(predictions["themes"], classes),
        )
        correct = np.array(
            [t in str(v).split(LABEL_SEPARATOR) for t, v in zip(predictions["theme"], predictions["true"])]
        )
    else:
        classes = sorted(set(predictions["true"]) | set(predictions["theme"]))
        y_true, y_pred = predictions["true"], predictions["theme"]
        correct = (predictions["theme"] == predictions["true"]).to_numpy()
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=None if multi_label else classes, zero_division=0
    )
    auto = ~predictions["needs_review"].to_numpy()
    return {
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "per_theme": {
            c: {
                "precision": float(pp),
                "recall": float(rr),
                "f1": float(ff),
                "support": int(ss),
            }
            for c, pp, rr, ff, ss in zip(classes, p, r, f, s)
        },
        "review_rate": float(1 - auto.mean()),
        "precision_not_reviewed": float(correct[auto].mean()) if auto.any() else float("nan"),
        "n_evaluated": int(len(predictions)),
        "classes": classes,
    }


def confusion_figure(predictions: pd.DataFrame, classes: list[str]):
    fig = Figure(figsize=(1.0 + 0.8 * len(classes), 1.0 + 0.7 * len(classes)))
    ax = fig.subplots()
    matrix = confusion_matrix(predictions["true"], predictions["theme"], labels=classes)
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(ax=ax, xticks_rotation=45, colorbar=False, cmap="Blues")
    ax.set_title("Confusion matrix (held-out data)")
    fig.tight_layout()
    return fig


def calibration_figure(predictions: pd.DataFrame, multi_label: bool, bins: int = 10):
    """Reliability of the top theme's confidence: predicted probability vs observed accuracy."""
    if multi_label:
        correct = np.array(
            [t in str(v).split(LABEL_SEPARATOR) for t, v in zip(predictions["theme"], predictions["true"])]
        )
    else:
        correct = (predictions["theme"] == predictions["true"]).to_numpy()
    conf = predictions["theme_confidence"].to_numpy()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
    frame = (
        pd.DataFrame({"bin": which, "conf": conf, "correct": correct})
        .groupby("bin")
        .agg(conf=("conf", "mean"), acc=("correct", "mean"), n=("conf", "size"))
    )
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(frame["conf"], frame["acc"], marker="o", color="#0072B2", label="model")
    ax.set_xlabel("confidence of the top theme")
    ax.set_ylabel("share correct")
    ax.set_title("Calibration (held-out data)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train(
    input_path: str | Path,
    text_column: str,
    label_column: str,
    multi_label: bool = False,
    taxonomy_path: str | Path | None = None,
    crosswalk_path: str | Path | None = None,
    model_dir: str | Path | None = None,
    register: str | None = None,
    holdout: float = 0.2,
    cv: int | None = None,
    *,
    settings: Settings,
    sub_label_column: str | None = None,
    add_public_data: bool = False,
) -> TrainResult:
    """Train, evaluate and log a theme model to MLflow; optionally save it to a folder and register it.
    The taxonomy's examples are always learned too; ``add_public_data`` adds the public feedback
    (see :func:`with_training_sources`). Metrics are on held-out rows of the input only.

    Example: ``train("fft.csv", "feedback", "code", crosswalk_path="data/crosswalks/nhs_fft_phase1.yaml", settings=s)``
    Example: ``train("our_complaints.csv", "text", "theme", add_public_data=True, settings=load_settings())``
    """
    if (add_public_data or crosswalk_path) and not taxonomy_path:
        taxonomy_path = settings.taxonomy_path  # council labels, or a crosswalk's targets, are its themes
    data = load_labelled(
        input_path, text_column, label_column, multi_label, taxonomy_path, crosswalk_path, sub_label_column
    )
    data = with_training_sources(data, settings, add_public_data, taxonomy_path)
    evaluation_set = ""
    if settings.evaluation_file and Path(settings.evaluation_file).is_file():
        data, evaluation_set = _without_evaluation_set(data, Path(settings.evaluation_file))
    fitted = fit_and_evaluate(data, settings, holdout, cv)
    source = {
        "input_file": "results store" if isinstance(input_path, pd.DataFrame) else Path(input_path).name,
        "text_column": text_column,
        "label_column": label_column,
        "crosswalk": Path(crosswalk_path).name if crosswalk_path else "",
        "evaluation_set": evaluation_set,
    }
    logged = tracking.log_theme_model(
        settings, run_record(fitted, data, source, add_public_data), fitted.pipeline, fitted.info, register
    )
    if model_dir:
        tracking.save_model_dir(fitted.pipeline, fitted.info, Path(model_dir))
    if register:
        from pipelines.registry import ensure_champion, write_model_card

        ensure_champion(register, logged.version, settings, fitted.info["evaluation"])
        card = write_model_card(register, logged.version, fitted.info, logged.run_id, source, settings)
        log.info("model card written", extra={"fields": {"file": str(card)}})
    log.info(
        "trained",
        extra={"fields": {"run_id": logged.run_id, "macro_f1": round(fitted.metrics["macro_f1"], 4),
                          "seconds": round(fitted.seconds, 1)}},
    )  # fmt: skip
    return TrainResult(
        logged.run_id,
        logged.model_uri,
        {**fitted.metrics, "train_seconds": fitted.seconds},
        logged.version,
        Path(model_dir) if model_dir else None,
        fitted.info["sub_themes_learned"],
        data.sub_label_source,
    )


@dataclass
class Fitted:
    """A trained pipeline, its honest metrics, the description saved with it, and the
    out-of-sample predictions the metrics came from."""

    pipeline: object
    metrics: dict
    info: dict
    evaluation: dict
    seconds: float


METRIC_KEYS = ("macro_f1", "micro_f1", "per_theme", "review_rate", "precision_not_reviewed", "n_evaluated")


def fit_and_evaluate(data: LabelledData, settings: Settings, holdout: float = 0.2, cv: int | None = None) -> Fitted:
    """Evaluate on held-out input rows (or k folds), then fit on every row: no I/O, no tracking."""
    pipeline = make_pipeline(
        multi_label=data.multi_label,
        target_precision=settings.target_precision,
        n_jobs=settings.n_jobs,
        random_state=settings.random_state,
    )
    log.info(
        "training",
        extra={"fields": {"rows": len(data.texts), "themes": int(data.labels.nunique()), "dropped": data.dropped}},
    )
    started = time.monotonic()
    evaluation = evaluate(
        pipeline,
        data.texts,
        data.labels,
        data.multi_label,
        holdout=holdout,
        cv=cv,
        random_state=settings.random_state,
        sub_labels=data.sub_labels,
        weights=data.weights,
        eligible=None if data.origin is None else (data.origin == "input").to_numpy(),
    )
    pipeline.fit(data.texts, data.labels, **_fit_params(data.sub_labels, weights=data.weights))
    seconds = time.monotonic() - started
    metrics = {k: evaluation[k] for k in METRIC_KEYS}
    method = f"{cv}-fold cross-validation" if cv else f"stratified {holdout:.0%} hold-out"
    info = model_info(pipeline.named_steps["classifier"], data, settings, {"method": method, **metrics})
    return Fitted(pipeline, metrics, info, evaluation, seconds)


def model_info(classifier, data: LabelledData, settings: Settings, evaluation: dict) -> dict:
    """What is saved with the model (``model_info.json``): its themes, taxonomy, threshold,
    training sources and evaluation."""
    taxonomy = data.taxonomy
    return {
        "classes": [str(c) for c in classifier.classes_],
        "multi_label": data.multi_label,
        "feedback_types": data.feedback_types,
        "taxonomy": {"name": taxonomy.name, "version": taxonomy.version, "sha256": taxonomy.source_sha256}
        if taxonomy
        else None,
        "review_threshold": classifier.review_threshold_,
        "target_precision": settings.target_precision,
        "sub_themes_learned": [str(c) for c in _sub_themes_learned(classifier)],
        "sub_labels_from": data.sub_label_source,
        "training_rows": int(len(data.texts)),
        "training_sources": _sources(data),
        "training_sha256": data.source_sha256,
        "evaluation": evaluation,
    }


def run_record(fitted: Fitted, data: LabelledData, source: dict, add_public_data: bool) -> tracking.ThemeRun:
    """The training run's tags, parameters, metrics and figures, as MLflow records them."""
    classifier = fitted.pipeline.named_steps["classifier"]
    metrics, info = fitted.metrics, fitted.info
    per_theme = metrics["per_theme"]
    figures = {"evaluation/calibration.png": calibration_figure(fitted.evaluation["predictions"], data.multi_label)}
    if not data.multi_label:
        figures["evaluation/confusion_matrix.png"] = confusion_figure(
            fitted.evaluation["predictions"], fitted.evaluation["classes"]
        )
    return tracking.ThemeRun(
        tags={
            "mlflow.source.git.commit": git_commit(),
            "input_sha256": data.source_sha256,
            "kind": "theme-classifier",
            "evaluation_set": source["evaluation_set"],
        },
        params={
            **{k: source[k] for k in ("input_file", "text_column", "label_column", "crosswalk")},
            "multi_label": data.multi_label,
            "taxonomy": data.taxonomy.name if data.taxonomy else "",
            "sub_labels_from": data.sub_label_source,
            "sub_themes_learned": len(info["sub_themes_learned"]),
            "rows": len(data.texts),
            **{f"rows.{_metric_key(k)}": v["rows"] for k, v in info["training_sources"].items()},
            "add_public_data": add_public_data,
            "evaluation": info["evaluation"]["method"],
            **{f"classifier.{k}": v for k, v in classifier.get_params().items()},
            **{f"dropped.{_metric_key(k)}": v for k, v in data.dropped.items()},
        },
        metrics={
            **{k: metrics[k] for k in ("macro_f1", "micro_f1", "review_rate", "precision_not_reviewed")},
            "review_threshold": classifier.review_threshold_,
            "train_seconds": fitted.seconds,
            **{f"{m}.{_metric_key(c)}": v[m] for m in ("f1", "precision", "recall") for c, v in per_theme.items()},
        },
        evaluation=metrics,
        figures=figures,
    )


def _sources(data: LabelledData) -> dict:
    """Rows, weight and rows per theme of each source the model learned from."""
    origin = data.origin if data.origin is not None else pd.Series("input", index=data.labels.index)
    weights = data.weights if data.weights is not None else pd.Series(1.0, index=data.labels.index)
    return {
        name: {
            "rows": int((origin == name).sum()),
            "weight": float(weights[origin == name].iloc[0]),
            "rows_per_theme": {
                str(k): int(v) for k, v in data.labels[origin == name].value_counts().sort_index().items()
            },
        }
        for name in dict.fromkeys(origin)
    }


def _without_evaluation_set(data: LabelledData, path: Path) -> tuple[LabelledData, str]:
    """Drop every text that is in the fixed evaluation set, so no model is trained on it."""
    from dataclasses import replace

    from pipelines.registry import evaluation_version, load_evaluation_set, text_keys

    held = set(text_keys(load_evaluation_set(path)["text"]))
    inside = np.isin(text_keys(data.texts), list(held))
    dropped = {**data.dropped, "in the evaluation set": int(inside.sum())}
    if inside.all():
        raise InputError(f"every row is in the evaluation set {path}; nothing left to train on")
    kept = replace(
        data,
        texts=data.texts[~inside].reset_index(drop=True),
        labels=data.labels[~inside].reset_index(drop=True),
        sub_labels=None if data.sub_labels is None else data.sub_labels[~inside].reset_index(drop=True),
        origin=None if data.origin is None else data.origin[~inside].reset_index(drop=True),
        weights=None if data.weights is None else data.weights[~inside].reset_index(drop=True),
        dropped=dropped,
    )
    return kept, f"{path.name}@{evaluation_version(path)}"


def _metric_key(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name)


def _labelled_rows(chunk: pd.DataFrame) -> pd.DataFrame:
    """complaint_id, text, theme, label_source: the latest analyst correction over the export's theme."""
    from pipelines.store import people_theme

    label, corrected = people_theme(chunk)
    keep = (label != "") & chunk["text_redacted"].fillna("").str.strip().ne("")
    return pd.DataFrame(
        {
            "complaint_id": chunk.loc[keep, "complaint_id"],
            "text": chunk.loc[keep, "text_redacted"],
            "theme": label[keep],
            "label_source": np.where(corrected[keep], "analyst correction", "export"),
        }
    )


def assemble_training_set(engine) -> tuple[pd.DataFrame, str]:
    """The council's own labelled complaints from the results store, and their fingerprint:
    the theme recorded in the exports, overridden by the latest analyst correction (the latest
    human label wins). Text is the store's redacted text. Read by query in chunks, so only the
    labelled rows (never the whole store) are held; passed to :func:`train` as a frame.

    Returns (frame with columns complaint_id, text, theme, label_source; sha256 fingerprint).
    """
    from pipelines import store

    parts = [_labelled_rows(chunk) for chunk in store.iter_labelled(engine)]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if rows.empty:
        raise InputError("the results store holds no labelled complaints (no export themes, no corrections)")
    fingerprint = frame_sha256(rows[["text", "theme"]])
    corrections = int((rows["label_source"] != "export").sum())
    log.info("training set assembled", extra={"fields": {"rows": len(rows), "corrections": corrections, "sha256": fingerprint}})  # fmt: skip
    return rows, fingerprint
