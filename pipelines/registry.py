"""What runs in production: the fixed evaluation set, the promotion gate and the alias history.

A retrained model becomes the nightly champion only if it is measurably no worse on the same
evaluation set as the champion, a set fixed by its content hash and never trained on (training
drops any row whose text is in it). Every decision is recorded in the results store and on the
model version in MLflow, so what ran in production, and why, can be read back.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from pipelines import store, tracking
from pipelines.config import Settings
from pipelines.tables import clean_text_cells
from pipelines.text import normalise

log = logging.getLogger(__name__)

MACRO_F1_TOLERANCE = 0.01  # the candidate's macro-F1 may be at most this much below the champion's
THEME_F1_MARGIN = 0.05  # and no theme's F1 may drop by more than this


def text_keys(texts) -> np.ndarray:
    """A stable key per text (sha256 of the normalised text), to match texts across files."""
    return np.array(
        [hashlib.sha256(normalise(str(t)).lower().encode("utf-8")).hexdigest() for t in texts], dtype=object
    )


def make_evaluation_set(texts: pd.Series, labels: pd.Series, share: float, path: Path) -> tuple[Path, str]:
    """Write the evaluation set: the labelled texts whose key falls in the first ``share`` of the
    hash space (stable: the same texts are chosen on any machine, whatever the file's order).
    Returns (path, version), the version being the first 12 hex digits of the file's sha256."""
    keys = text_keys(texts)
    chosen = np.array([int(k[:8], 16) / 0xFFFFFFFF < share for k in keys])
    frame = pd.DataFrame({"text": texts.to_numpy()[chosen], "theme": labels.to_numpy()[chosen]})
    frame = frame.drop_duplicates("text").sort_values(["theme", "text"]).reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Line breaks made line feeds, control characters dropped (text keys normalise them away
    # anyway), so the file reads back one record per text; no formula prefix: it would change keys.
    clean_text_cells(frame).to_csv(path, index=False, lineterminator="\n")
    return path, evaluation_version(path)


def evaluation_version(path: Path) -> str:
    from pipelines.datasets import sha256_of

    return sha256_of(path)[:12]


def load_evaluation_set(path: Path) -> pd.DataFrame:
    from pipelines.tables import read_table

    return read_table(path, ["text", "theme"])


def evaluate_model(model_uri: str, evaluation: pd.DataFrame, settings: Settings) -> dict:
    """Macro-F1 and per-theme F1 of a registered model on the evaluation set."""
    from pipelines.score import score_texts

    # An evaluation set that says each row's feedback type is scored with it, as the nightly run does.
    given = evaluation["feedback_type"].tolist() if "feedback_type" in evaluation.columns else None
    predicted = score_texts(tracking.resolve_model(model_uri, settings), evaluation["text"].tolist(), given)["theme"]
    themes = sorted(set(evaluation["theme"]))
    per_theme = f1_score(evaluation["theme"], predicted, labels=themes, average=None, zero_division=0)
    return {
        "macro_f1": float(f1_score(evaluation["theme"], predicted, labels=themes, average="macro", zero_division=0)),
        "per_theme_f1": {t: float(f) for t, f in zip(themes, per_theme)},
        "n": len(evaluation),
    }


@dataclass
class Decision:
    model_name: str
    version: str
    alias: str  # "champion" or "challenger"
    reason: str
    candidate: dict
    champion: dict | None
    previous_champion: str | None

    @property
    def promoted(self) -> bool:
        return self.alias == "champion"


def gate(candidate: dict, champion: dict | None, tolerance: float, margin: float) -> tuple[bool, str]:
    """(promote?, reason): the rule, on metrics of the same evaluation set."""
    if champion is None:
        return True, "no champion yet"
    problems = []
    if candidate["macro_f1"] < champion["macro_f1"] - tolerance:
        problems.append(
            f"macro-F1 {candidate['macro_f1']:.3f} is more than {tolerance} below the champion's {champion['macro_f1']:.3f}"
        )
    for theme, before in champion["per_theme_f1"].items():
        after = candidate["per_theme_f1"].get(theme, 0.0)
        if after < before - margin:
            problems.append(f"F1 of {theme} drops from {before:.3f} to {after:.3f} (more than {margin})")
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"macro-F1 {candidate['macro_f1']:.3f} vs champion {champion['macro_f1']:.3f} (tolerance {tolerance}); "
        f"no theme's F1 drops by more than {margin}"
    )


def promote(
    candidate_uri: str,
    settings: Settings,
    evaluation_file: Path | None = None,
    tolerance: float = MACRO_F1_TOLERANCE,
    margin: float = THEME_F1_MARGIN,
    decided_by: str | None = None,
) -> Decision:
    """Compare ``models:/NAME/VERSION`` with the champion on the evaluation set; give it the
    ``champion`` alias if it passes the gate, ``challenger`` otherwise; record the decision."""
    from pipelines.tables import InputError

    parts = candidate_uri.removeprefix("models:/").split("/")
    if not candidate_uri.startswith("models:/") or len(parts) != 2 or not parts[1].isdigit():
        raise InputError(f"candidate {candidate_uri!r} must be models:/NAME/VERSION")
    name, version = parts
    evaluation_file = evaluation_file or settings.evaluation_file
    if evaluation_file is None or not Path(evaluation_file).is_file():
        raise InputError(f"evaluation set not found: {evaluation_file} (make one with: python cli.py evaluation-set)")
    evaluation = load_evaluation_set(Path(evaluation_file))
    eval_version = evaluation_version(Path(evaluation_file))
    if not tracking.version_exists(settings, name, version):
        raise InputError(f"model version {candidate_uri} not found in {settings.tracking_uri}")
    current = tracking.alias_version(settings, name)
    cand = evaluate_model(candidate_uri, evaluation, settings)
    if current == version:  # the first registered model is made champion when it is trained
        return Decision(name, version, "champion", "already the champion", cand, None, current)
    champ = evaluate_model(f"models:/{name}/{current}", evaluation, settings) if current else None
    passed, reason = gate(cand, champ, tolerance, margin)
    alias = tracking.CHAMPION if passed else tracking.CHALLENGER
    tags = {
        "promotion.decision": alias,
        "promotion.reason": reason[:4000],
        "promotion.evaluation_set": eval_version,
        "promotion.macro_f1": f"{cand['macro_f1']:.4f}",
    }
    tracking.set_alias(settings, name, alias, version, tags)
    decision = Decision(name, version, alias, reason, cand, champ, current)
    store.record_alias_decision(
        store.connect(settings.store),
        model_name=name,
        version=version,
        alias=alias,
        previous_champion=current,
        decided_by=decided_by or getpass.getuser(),
        evaluation_set=f"{Path(evaluation_file).name}@{eval_version}",
        metrics=json.dumps({"candidate": cand, "champion": champ}),
        reason=reason,
    )
    log.info(
        "promotion decided",
        extra={"fields": {"model": name, "version": version, "alias": alias, "macro_f1": round(cand["macro_f1"], 4)}},
    )
    return decision


def model_card(name: str, version: str, info: dict, run_id: str, params: dict) -> str:
    """A model card in Markdown: data and its fingerprint, taxonomy, metrics per theme, known
    limits, intended use and date."""
    import datetime as dt

    evaluation = info.get("evaluation", {})
    per_theme = evaluation.get("per_theme", {})
    taxonomy = info.get("taxonomy") or {}
    lines = [
        f"# Model card: {name} version {version}",
        "",
        f"Date: {dt.date.today():%d %B %Y}. MLflow run `{run_id}`.",
        "",
        "## Intended use",
        "",
        "Suggests the substantive theme of a complaint or compliment, with a calibrated confidence and the",
        "words behind it, to **assist** complaints analysts. People decide: a tag with `needs_review` must",
        "be checked, an analyst's theme always overrides the model's, and no decision about a person is",
        "made from a tag.",
        "",
        "## Training data",
        "",
        f"- Source: `{params.get('input_file', '')}` (text column `{params.get('text_column', '')}`, labels"
        f" `{params.get('label_column', '')}`{', through crosswalk ' + params['crosswalk'] if params.get('crosswalk') else ''}).",
        f"- Rows used: {info.get('training_rows')}; sha256 of the input: `{info.get('training_sha256', '')}`.",
        f"- Fixed evaluation set excluded from training: {params.get('evaluation_set') or 'none configured'}.",
        f"- Taxonomy: {taxonomy.get('name', 'labels as given')} version {taxonomy.get('version', '-')}"
        f"{' (sha256 ' + taxonomy['sha256'][:12] + ')' if taxonomy.get('sha256') else ''}.",
        "",
        "## Metrics",
        "",
        f"Evaluation: {evaluation.get('method', '')}, {evaluation.get('n_evaluated', '')} texts. "
        f"Macro-F1 {evaluation.get('macro_f1', float('nan')):.3f}, micro-F1 {evaluation.get('micro_f1', float('nan')):.3f}; "
        f"{evaluation.get('review_rate', 0):.0%} of tags sent to review, precision of the rest "
        f"{evaluation.get('precision_not_reviewed', float('nan')):.3f}.",
        "",
        "| theme | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {t} | {m.get('precision', 0):.3f} | {m.get('recall', 0):.3f} | {m.get('f1', 0):.3f} | {m.get('support', '')} |"
            for t, m in per_theme.items()
        ],
        "",
        "## Known limits",
        "",
    ]
    # Figures come from the model's own run (``info``), never from files beside the code.
    lines.append(
        "- Accuracy drops on another organisation's feedback: benchmarks/theme_accuracy.py measures it on a trust"
        " not seen in training (figures in the README). Check a council's own sample before relying on the tags."
    )
    lines += [
        "- The default model learns from NHS Friends and Family Test feedback mapped onto the council's themes by"
        " a crosswalk, not from council complaints; retrain on the council's own labels when there are enough.",
        "- English text only. Complaints are often multi-faceted; one substantive theme is a simplification.",
        "- Names are redacted only after a title (Mrs, Dr, Nurse...); the model's vocabulary may hold other names,"
        " so store the model like the complaints themselves.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(name: str, version: str, info: dict, run_id: str, params: dict, settings: Settings) -> Path:
    """The card as Markdown under ``models/`` and as an artifact of the model's MLflow run."""
    text = model_card(name, version, info, run_id, params)
    path = settings.models_path / f"{name}-v{version}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    tracking.log_text(run_id, text, "model_card.md")
    return path


def ensure_champion(name: str, version: str, settings: Settings, evaluation: dict) -> None:
    """The first registered version becomes the champion, and that decision goes into the alias
    history like any promotion; later versions wait for :func:`promote`."""
    if tracking.alias_version(settings, name) is not None:
        return
    tracking.set_alias(settings, name, tracking.CHAMPION, version)
    metrics = {"macro_f1": evaluation.get("macro_f1"), "n": evaluation.get("n_evaluated")}
    store.record_alias_decision(
        store.connect(settings.store),
        model_name=name,
        version=version,
        alias=tracking.CHAMPION,
        previous_champion=None,
        decided_by=getpass.getuser(),
        evaluation_set=evaluation.get("method", ""),
        metrics=json.dumps({"candidate": metrics, "champion": None}),
        reason="first model: no champion yet",
    )
