"""House rules: one door to MLflow (only it and the pyfunc model code import mlflow), short
functions, and the model's saved form derived from single definitions (output schema,
dependencies)."""

import ast
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from pipelines import tracking
from pipelines.config import PROJECT_ROOT
from pipelines.schema import OUTPUT_COLUMNS
from pipelines.score import SPARK_RESULT_TYPE
from pipelines.store import TAGGING_FIELDS

# The pyfunc model's own code (its class and its models-from-code entry) may import mlflow too.
ALLOWED = {"pipelines/tracking.py", "pipelines/themes.py", "pipelines/pyfunc_entry.py"}


def _imports_mlflow(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "mlflow" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            return True
    return False


def test_only_the_tracking_module_imports_mlflow():
    files = [*sorted((PROJECT_ROOT / "pipelines").glob("*.py")), PROJECT_ROOT / "cli.py"]
    importing = {str(p.relative_to(PROJECT_ROOT)) for p in files if _imports_mlflow(p)}
    assert "pipelines/tracking.py" in importing  # the check itself sees imports
    assert importing <= ALLOWED, f"mlflow imported outside the tracking module: {sorted(importing - ALLOWED)}"


MAX_FUNCTION_LINES = 80


def test_no_function_in_the_package_or_cli_is_longer_than_80_lines():
    files = [*sorted((PROJECT_ROOT / "pipelines").glob("*.py")), PROJECT_ROOT / "cli.py"]
    long = [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in files
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno >= MAX_FUNCTION_LINES
    ]
    assert not long, f"split these into named steps: {long}"


def test_output_schema_is_defined_once():
    signature = tracking.model_signature()
    assert [c.name for c in signature.outputs.inputs] == OUTPUT_COLUMNS
    assert [part.split()[0] for part in SPARK_RESULT_TYPE.split(", ")] == OUTPUT_COLUMNS
    assert TAGGING_FIELDS == OUTPUT_COLUMNS[: len(TAGGING_FIELDS)] and "theme_probabilities" not in TAGGING_FIELDS
    assert [c.name for c in signature.inputs.inputs] == ["text", "feedback_type"]
    assert not signature.inputs.inputs[1].required  # the export's feedback type is optional


def test_served_model_requirements_come_from_pyproject():
    declared = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {Requirement(line).name: str(Requirement(line).specifier) for line in declared}
    served = [Requirement(line) for line in tracking.pip_requirements()]
    assert [r.name for r in served] == list(tracking.SERVING_PACKAGES)
    assert all(str(r.specifier) == bounds[r.name] and str(r.specifier).startswith(">=") for r in served)
