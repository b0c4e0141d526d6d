"""The theme model's inputs and outputs, defined once: the MLflow signature, the Spark UDF's
result type, the scorer's output columns and the store's tagging fields all derive from here.
(A module of its own so that the store need not import the model's code.)"""

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
