"""Command line for Learning from Feedback: thin wrappers over the ``pipelines`` package.

Exit codes: 0 success; 3 finished, but some rows were quarantined; 2 bad input or usage;
1 unexpected failure.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipelines.config import configure_logging

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_QUARANTINED = 0, 1, 2, 3

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, help=__doc__)


@app.callback()
def _main(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bar (for cron).")
    ] = False,
):
    configure_logging(quiet)
    _STATE["quiet"] = quiet


_STATE = {"quiet": False}
# Every command takes --config; settings are loaded once, here, and passed to the package.
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file; LFF_* environment variables override it.")
]


def _settings(config: Path | None):
    from pipelines.config import load_settings

    return _guarded(lambda: load_settings(config))


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _guarded(func):
    """Turn known input problems into one-line errors with exit code 2."""
    from pipelines.datasets import DatasetError
    from pipelines.tables import InputError
    from pipelines.taxonomy import TaxonomyError

    try:
        return func()
    except (InputError, TaxonomyError, DatasetError) as err:
        _fail(str(err), EXIT_BAD_INPUT)
    except ValueError as err:
        _fail(str(err), EXIT_BAD_INPUT)


@app.command()
def train(
    input: Annotated[Path | None, typer.Option(help="Labelled export: CSV, Parquet or XLSX.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Column holding the feedback text.")] = None,
    label_column: Annotated[
        str | None, typer.Option(help="Column holding the theme (or the other framework's code with --crosswalk).")
    ] = None,
    from_store: Annotated[
        bool,
        typer.Option(
            help="Train on the results store's labelled complaints: export themes, overridden by analysts' corrections."
        ),
    ] = False,
    multi_label: Annotated[bool, typer.Option(help="Labels are ';'-separated and a text may have several.")] = False,
    taxonomy: Annotated[
        Path | None, typer.Option(help="Taxonomy YAML; labels must be its themes or sub-themes.")
    ] = None,
    crosswalk: Annotated[
        Path | None, typer.Option(help="Crosswalk YAML mapping another framework's codes onto the taxonomy.")
    ] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Also write the MLflow model folder here.")] = None,
    register: Annotated[
        str | None, typer.Option(help="Register the model under this name in the MLflow registry.")
    ] = None,
    cv: Annotated[
        int | None, typer.Option(help="Evaluate with k-fold cross-validation instead of a 20% hold-out.")
    ] = None,
    sub_label_column: Annotated[
        str | None,
        typer.Option(
            help="Column of finer labels that roll up to the theme (e.g. a sub-category); the model learns "
            "them too. Default: the crosswalk's codes, or the taxonomy sub-themes the labels name."
        ),
    ] = None,
    add_public_data: Annotated[
        bool,
        typer.Option(
            help="Also learn from the public NHS feedback mapped through the default crosswalk (and the "
            "taxonomy's examples), the council's rows weighted so they take over as they grow (setting council_weight)."
        ),
    ] = False,
    config: ConfigOption = None,
):
    """Train a theme model, evaluate it on held-out data and log it to MLflow.
    The taxonomy's example texts are always learned too.

    Example (a council's first labelled complaints on top of the public data): python cli.py train
    --input our_complaints.csv --text-column text --label-column theme --add-public-data --model-dir models/ours

    Example: python cli.py train --input ../shared/data/nhs_fft_phase1.csv --text-column feedback
    --label-column code --crosswalk data/crosswalks/nhs_fft_phase1.yaml --register complaint-themes

    Example (the council's own labels and corrections): python cli.py train --from-store --register complaint-themes

    Example (any taxonomy, with its sub-categories learned too): python cli.py train --input fft.csv
    --text-column feedback --label-column label --sub-label-column code --cv 5
    """
    from pipelines.train import train as run_train

    settings = _settings(config)
    if from_store:
        input, text_column, label_column, taxonomy = _store_training_set(settings, taxonomy)
    elif not (input and text_column and label_column):
        _fail("give --input, --text-column and --label-column, or --from-store", EXIT_BAD_INPUT)
    options = dict(multi_label=multi_label, taxonomy_path=taxonomy, crosswalk_path=crosswalk, model_dir=model_dir,
                   register=register, cv=cv, sub_label_column=sub_label_column, add_public_data=add_public_data)  # fmt: skip
    result = _guarded(lambda: run_train(input, text_column, label_column, settings=settings, **options))
    _print_training(result, register)


def _store_training_set(settings, taxonomy: Path | None) -> tuple:
    """(labelled rows, text column, label column, taxonomy) of the store's labelled complaints."""
    from pipelines.store import connect
    from pipelines.train import assemble_training_set

    rows, fingerprint = _guarded(lambda: assemble_training_set(connect(settings.store)))
    typer.echo(f"training set from the store: {len(rows)} labelled complaints (sha256 {fingerprint[:12]})", err=True)
    return rows, "text", "theme", taxonomy or settings.taxonomy_path


def _print_training(result, register: str | None) -> None:
    """The held-out metrics per theme, and where the model went."""
    m = result.metrics
    typer.echo(f"macro-F1 {m['macro_f1']:.3f}  micro-F1 {m['micro_f1']:.3f}  ({m['n_evaluated']} held-out rows)")
    typer.echo(f"{'theme':<32}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for theme, row in m["per_theme"].items():
        typer.echo(f"{theme:<32}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>10}")
    typer.echo(f"sent to review: {m['review_rate']:.1%}; precision of the rest: {m['precision_not_reviewed']:.3f}")
    if result.sub_themes:
        typer.echo(f"sub-themes learned too: {len(result.sub_themes)} ({result.sub_labels_from})")
    typer.echo(f"MLflow run {result.run_id}; model {result.model_uri}")
    if result.registered_version:
        typer.echo(f"registered {register} version {result.registered_version}")


@app.command()
def score(
    model: Annotated[str, typer.Option(help="MLflow model folder, or models:/NAME@ALIAS from the registry.")],
    input: Annotated[Path, typer.Option(help="Complaints to tag: CSV, Parquet or XLSX.")],
    text_column: Annotated[str, typer.Option(help="Column holding the complaint text.")],
    output: Annotated[Path, typer.Option(help="Tagged output: .csv or .parquet.")],
    id_column: Annotated[
        str | None, typer.Option(help="Column holding a unique id (duplicates are quarantined).")
    ] = None,
    quarantine: Annotated[Path | None, typer.Option(help="Where bad rows go (default: OUTPUT.quarantine.csv).")] = None,
    engine: Annotated[
        str, typer.Option(help="local (this machine) or spark (needs the spark extra and Java 17).")
    ] = "local",
    spark_master: Annotated[
        str, typer.Option(help="With --engine spark: any Spark master URL (local[N], spark://, yarn, k8s://).")
    ] = "local[*]",
    feedback_type_column: Annotated[
        str | None,
        typer.Option(
            help="Column saying what each row is (complaint, compliment; empty = unknown): the theme is then "
            "one of that type's. Rows with any other value are quarantined."
        ),
    ] = None,
    keep_text: Annotated[
        bool,
        typer.Option(
            help="Write the complaint text as it came in; by default the output's text column is redacted "
            "(names, phones, emails, NHS/NI numbers, postcodes, street addresses replaced by placeholders)."
        ),
    ] = False,
    config: ConfigOption = None,
):
    """Tag complaints with theme, theme_confidence, themes, needs_review and evidence.

    Example (the export says which rows are complaints): python cli.py score --model models:/complaint-themes@champion
    --input data/sample/complaints.csv --text-column text --feedback-type-column feedback_type --output tagged.csv

    Example: python cli.py score --model models:/complaint-themes@champion --input data/sample/complaints.csv
    --text-column text --id-column complaint_id --output tagged.csv

    Example (Spark; OUTPUT is a folder of Parquet files): python cli.py score --engine spark --spark-master local[2]
    --model models:/complaint-themes@champion --input comments.parquet --text-column text --id-column id --output tagged/
    """
    from pipelines.score import score_file, score_file_spark

    if engine not in ("local", "spark"):
        _fail(f"--engine {engine!r}: use local or spark", EXIT_BAD_INPUT)
    common = dict(type_column=feedback_type_column, keep_text=keep_text, settings=_settings(config))
    args = (model, input, output, text_column, id_column, quarantine)
    if engine == "spark":
        try:
            summary = _guarded(lambda: score_file_spark(*args, spark_master, **common))
        except ImportError as err:
            _fail(str(err), EXIT_BAD_INPUT)
    else:
        summary = _guarded(lambda: score_file(*args, progress=not _STATE["quiet"], **common))
    if not summary.rows_in:
        typer.echo(f"no rows: {input} has a header and nothing else", err=True)
    typer.echo(f"{summary.rows_in} rows read, {summary.rows_scored} tagged -> {summary.output}", err=True)
    if summary.rows_quarantined:
        typer.echo(f"{summary.rows_quarantined} rows quarantined -> {summary.quarantine}", err=True)
    raise typer.Exit(summary.exit_code)


@app.command()
def learning(
    input: Annotated[
        Path, typer.Option(help="Reviews: a CSV/Parquet/XLSX table, or a folder of .txt, .md, .docx and .pdf files.")
    ],
    output: Annotated[Path, typer.Option(help="Points file (.csv or .parquet): one row per learning point.")],
    groups: Annotated[Path | None, typer.Option(help="Groups file (.csv or .parquet): one row per group.")] = None,
    id_column: Annotated[str, typer.Option(help="Table column with the review id.")] = "id",
    text_column: Annotated[str, typer.Option(help="Table column with the review text.")] = "concerns",
    date_column: Annotated[
        str, typer.Option(help="Column with the review date (table or the folder's reviews.csv).")
    ] = "date",
    team_column: Annotated[str, typer.Option(help="Column with the team or service.")] = "team",
    name_column: Annotated[
        str | None,
        typer.Option(
            help="Column naming the review's subject, redacted wherever the text names them (a name, or text with 'death of NAME')."
        ),
    ] = None,
    seed_themes: Annotated[
        Path | None,
        typer.Option(
            help="YAML learning framework: a list of {name, description, examples}; e.g. data/frameworks/sar_learning_domains.yaml."
        ),
    ] = None,
    grouping: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the saved grouping (default: under the state folder); reused so group ids stay stable."
        ),
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Ignore the saved grouping and group from scratch.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed; the same input and seed give the same groups.")] = 0,
    config: ConfigOption = None,
):
    """Extract learning points from serious incident reviews and group the recurring ones.

    The points file has one row per point and group (a point can teach more than one thing);
    a point in no group has one row with group_id -1.

    Example: python cli.py learning --input ../shared/data/pfd_suicide_reports.csv --id-column id
    --text-column concerns --name-column investigation --output points.csv --groups groups.csv
    """
    import shutil

    from pipelines.encoder import get_encoder
    from pipelines.learning import log_grouping, run_learning

    settings = _settings(config)
    grouping_dir = grouping or settings.state / "learning" / "grouping"
    _guarded(lambda: get_encoder(settings.encoder_dir))  # no verified encoder: exit 2, nothing touched
    if fresh and grouping_dir.exists():
        shutil.rmtree(grouping_dir)
    summary = _guarded(
        lambda: run_learning(
            input,
            output,
            groups,
            grouping_dir=grouping_dir,
            seed_themes=seed_themes,
            id_column=id_column,
            text_column=text_column,
            date_column=date_column,
            team_column=team_column,
            name_column=name_column,
            random_state=seed,
            encoder_dir=settings.encoder_dir,
        )
    )
    log_grouping(grouping_dir, summary, settings)
    typer.echo(
        f"{summary.points} learning points, {summary.groups} groups ({summary.recurring_groups} recurring), {summary.ungrouped} ungrouped -> {output}",
        err=True,
    )
    for problem in summary.problems:
        typer.echo(f"problem: {problem['reason']}", err=True)
    raise typer.Exit(summary.exit_code)


@app.command()
def nightly(
    config: ConfigOption = None,
):
    """The nightly job: tag new and changed complaints from the drop folder into the results store.

    Trains a default model first if none is registered. Exit codes: 0 success, 3 finished with
    quarantined rows, 4 another run holds the lock, 1 failure.

    Example: python cli.py --quiet nightly --config /etc/learning-from-feedback.yaml
    """
    from pipelines.nightly import EXIT_LOCKED, run_nightly
    from pipelines.store import LockHeld

    settings = _settings(config)
    try:
        summary = _guarded(lambda: run_nightly(settings, progress=not _STATE["quiet"]))
    except LockHeld as err:
        _fail(f"not started: {err}", EXIT_LOCKED)
    c = summary.counts
    if c.get("quarantined") or not _STATE["quiet"]:
        typer.echo(
            f"run {summary.run_id}: read {c['rows_read']}, new {c['new']}, changed {c['changed']}, "
            f"updated {c['updated']}, scored {c['scored']}, "
            f"unchanged {c['unchanged']}, quarantined {c['quarantined']} (model {summary.model_uri} v{summary.model_version})",
            err=True,
        )
    if summary.quarantine_file:
        typer.echo(f"quarantined rows and reasons: {summary.quarantine_file}", err=True)
    raise typer.Exit(summary.exit_code)


@app.command()
def report(
    output: Annotated[Path, typer.Option(help="Folder for theme_report.html/.xlsx and learning_bulletin.html/.md.")],
    from_: Annotated[
        str | None,
        typer.Option("--from", help="First day of the period (YYYY-MM-DD); default report_months (12) before --to."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            help="Last day of the period (YYYY-MM-DD); default the end of the last complete month of the data "
            "in the store (today when only --from is given)."
        ),
    ] = None,
    service: Annotated[str | None, typer.Option(help="Only this service or team.")] = None,
    record: Annotated[
        bool,
        typer.Option(help="Remember this bulletin as circulated: the next one says what is new and growing since."),
    ] = True,
    config: ConfigOption = None,
):
    """The analysts' theme report (HTML and XLSX) and the team managers' learning bulletin
    (HTML and Markdown), from the results store. The nightly run writes the same as a preview
    (outputs/reports/) without marking the bulletin circulated.

    Example: python cli.py report --from 2025-04-01 --to 2026-03-31 --output reports/2025-26
    """
    import datetime as dt

    from pipelines.reports import run_reports

    def day(value: str | None, name: str):
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name} {value!r} is not a date (expected YYYY-MM-DD)") from None

    settings = _settings(config)
    paths = _guarded(
        lambda: run_reports(settings, output, day(from_, "--from"), day(to, "--to"), service, record_bulletin=record)
    )
    for path in paths:
        typer.echo(str(path))


review_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Analysts' corrections: export the review queue, import it back."
)
app.add_typer(review_app, name="review")


@review_app.command("export")
def review_export(
    output: Annotated[Path, typer.Option(help="The review file to write (.xlsx).")],
    audit: Annotated[int, typer.Option(help="Confident tags drawn at random for audit, after the unsure ones.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed of the audit sample.")] = 0,
    limit: Annotated[
        int | None, typer.Option(help="At most this many unsure tags (the least confident); default: all.")
    ] = None,
    config: ConfigOption = None,
):
    """Write the review queue: the model's unsure tags in the order that teaches the model most
    (least confident first, themes and services taking turns, near-duplicates last), then an
    audit sample of confident ones, with redacted text, evidence and an empty analyst_theme column.

    Example: python cli.py review export --output review-2026-11-26.xlsx
    """
    from pipelines.corrections import export_review
    from pipelines.store import connect

    settings = _settings(config)
    rows = _guarded(lambda: export_review(connect(settings.store), settings, output, audit, seed, limit))
    typer.echo(f"{rows} tags to review -> {output}", err=True)


@review_app.command("import")
def review_import(
    file: Annotated[Path, typer.Argument(help="A review file filled in by an analyst (.xlsx).")],
    reviewer: Annotated[str | None, typer.Option(help="Who reviewed (default: the login name).")] = None,
    config: ConfigOption = None,
):
    """Store the analysts' themes from a review file. Rows with a theme that is not in the
    taxonomy, a formula or an unknown complaint are quarantined with their row and reason
    (exit code 3); the rest are stored with who, when and the file.

    Example: python cli.py review import review-2026-11-26.xlsx --reviewer "A. Analyst"
    """
    from pipelines.corrections import import_review
    from pipelines.store import connect

    settings = _settings(config)
    if not file.is_file():
        _fail(f"{file}: file not found", EXIT_BAD_INPUT)
    summary = _guarded(lambda: import_review(connect(settings.store), settings, file, reviewer))
    typer.echo(
        f"{summary.stored} corrections stored, {summary.unchanged} unchanged, {summary.quarantined} rows quarantined",
        err=True,
    )
    if summary.quarantine_file:
        typer.echo(f"quarantined rows and reasons: {summary.quarantine_file}", err=True)
    raise typer.Exit(summary.exit_code)


@app.command("evaluation-set")
def evaluation_set(
    input: Annotated[Path, typer.Option(help="Labelled export: CSV, Parquet or XLSX.")],
    text_column: Annotated[str, typer.Option(help="Column holding the feedback text.")],
    label_column: Annotated[str, typer.Option(help="Column holding the theme (or code, with --crosswalk).")],
    output: Annotated[Path, typer.Option(help="The evaluation set to write (CSV: text, theme).")],
    share: Annotated[float, typer.Option(min=0.01, max=0.9, help="Share of the texts held out.")] = 0.2,
    taxonomy: Annotated[Path | None, typer.Option(help="Taxonomy YAML.")] = None,
    crosswalk: Annotated[Path | None, typer.Option(help="Crosswalk YAML from another framework's codes.")] = None,
    config: ConfigOption = None,
):
    """Fix the evaluation set the promotion gate uses: a stable share of the labelled texts,
    chosen by text hash. Point the setting evaluation_file at it; training then never uses its texts.

    Example: python cli.py evaluation-set --input ../shared/data/nhs_fft_phase1.csv --text-column feedback
    --label-column code --crosswalk data/crosswalks/nhs_fft_phase1.yaml --output data/evaluation/fft-v1.csv
    """
    from pipelines.registry import make_evaluation_set
    from pipelines.train import load_labelled

    if crosswalk and not taxonomy:
        taxonomy = _settings(config).taxonomy_path  # the crosswalk maps onto the configured taxonomy
    data = _guarded(lambda: load_labelled(input, text_column, label_column, False, taxonomy, crosswalk))
    path, version = make_evaluation_set(data.texts, data.labels, share, output)
    typer.echo(f"evaluation set {path} (version {version})")


@app.command()
def promote(
    candidate: Annotated[str, typer.Option(help="The registered model to judge: models:/NAME/VERSION.")],
    evaluation: Annotated[
        Path | None, typer.Option(help="Evaluation set (default: the evaluation_file setting).")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="How far the candidate's macro-F1 may fall below the champion's.")
    ] = 0.01,
    margin: Annotated[float, typer.Option(help="How far any theme's F1 may fall.")] = 0.05,
    config: ConfigOption = None,
):
    """Promotion gate: the candidate becomes champion only if, on the fixed evaluation set, its
    macro-F1 is not worse than the champion's beyond the tolerance and no theme's F1 drops by
    more than the margin; otherwise it becomes challenger. Exit code 0 promoted, 5 refused.

    Example: python cli.py promote --candidate models:/complaint-themes/3
    """
    from pipelines.registry import promote as run_promote

    settings = _settings(config)
    decision = _guarded(lambda: run_promote(candidate, settings, evaluation, tolerance, margin))
    champ = f"{decision.champion['macro_f1']:.3f}" if decision.champion else "none"
    typer.echo(
        f"{decision.model_name} version {decision.version} -> {decision.alias} "
        f"(macro-F1 {decision.candidate['macro_f1']:.3f}, champion {champ}): {decision.reason}"
    )
    raise typer.Exit(0 if decision.promoted else 5)


@app.command()
def aliases(
    config: ConfigOption = None,
):
    """The history of promotion decisions: which version became champion or challenger, when, by whom, and why.

    Example: python cli.py aliases
    """
    from pipelines.store import connect, read_alias_history

    settings = _settings(config)
    frame = read_alias_history(connect(settings.store))
    columns = [
        "decided_at",
        "model_name",
        "version",
        "alias",
        "previous_champion",
        "decided_by",
        "evaluation_set",
        "reason",
    ]
    typer.echo(frame[columns].to_string(index=False) if len(frame) else "no promotion decisions yet")


@app.command()
def export(
    output: Annotated[Path, typer.Option(help="File to write: .csv or .parquet.")],
    config: ConfigOption = None,
):
    """Every complaint in the results store with its current tagging (text redacted, CSV
    formulas neutralised). The nightly run writes only each night's changes.

    Example: python cli.py export --output all-taggings.parquet
    """
    from pipelines.nightly import export_current
    from pipelines.store import connect

    settings = _settings(config)
    path = _guarded(lambda: export_current(connect(settings.store), output))
    typer.echo(str(path))


@app.command()
def runs(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(help="How many recent runs.")] = 20,
):
    """The run ledger: recent nightly runs with status, counts, model and duration.

    Example: python cli.py runs --limit 5
    """
    from pipelines.store import connect, read_runs

    settings = _settings(config)
    frame = read_runs(connect(settings.store), limit)
    columns = [
        "run_id",
        "started_at",
        "status",
        "rows_read",
        "new",
        "changed",
        "updated",
        "scored",
        "unchanged",
        "quarantined",
        "model_version",
        "seconds",
    ]
    typer.echo(frame[columns].to_string(index=False) if len(frame) else "no runs yet")


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - last resort: one line, failure exit code, no traceback spam
        typer.echo(f"error: unexpected failure: {type(err).__name__}: {err}", err=True)
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    main()
