"""The theme model's inputs and outputs, defined once: the MLflow signature, the Spark UDF's
result type, the scorer's output columns and the store's tagging fields all derive from here.
(A module of its own so that the store need not import the model's code.)"""

import numpy as np

FEEDBACK_TYPE_INPUT = "feedback_type"  # optional model input: the type an export states

# (column, type) of every output, in order.
OUTPUT_SCHEMA = [
    ("theme", "string"),
    ("theme_confidence", "double"),
    ("themes", "string"),
    ("needs_review", "boolean"),
    ("evidence", "string"),
    ("feedback_type", "string"),
    ("theme_probabilities", "string"),
]
OUTPUT_COLUMNS = [name for name, _ in OUTPUT_SCHEMA]
# Stored with each tagging: every output but the per-theme probabilities, which reports never read.
TAGGING_FIELDS = [c for c in OUTPUT_COLUMNS if c != "theme_probabilities"]


def known_types(feedback_types: dict[str, str] | None) -> list[str]:
    """The feedback types a model's themes belong to (lower case), in taxonomy order."""
    return list(dict.fromkeys(str(t).strip().lower() for t in (feedback_types or {}).values()))


def normalise_types(values) -> np.ndarray:
    """Given feedback types as lower-case stripped strings; missing values become "" (unknown)."""
    return np.array(["" if v is None or v != v else str(v).strip().lower() for v in values], dtype=object)


def unknown_types(given: np.ndarray, feedback_types: dict[str, str] | None) -> np.ndarray:
    """True where a given type is neither empty nor one of the model's types."""
    return (given != "") & ~np.isin(given, known_types(feedback_types))
