"""`ser train`, `ser models list|show|promote`, `ser predict`.

``ser train`` checks the data first (one line, exit 2, before Prefect starts), then runs
flows/train.py. ``ser models`` and ``ser predict`` are plain etl calls: no Prefect.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy import Engine

from config import get_settings
from etl.features.specs import DEFAULT_SET
from etl.training.config import CALL_SPEAKER_PRIOR_ROWS, TrainConfig
from ser.runtime import (
    ensure_voice_encoder,
    fail,
    flow_settings,
    is_tty,
    open_database,
    quiet_prefect,
)

if TYPE_CHECKING:
    from etl.training.train import Preflight

models_app = typer.Typer(help="Registered models: list, show, promote.", no_args_is_help=True)

_FAMILIES = "xgboost, svm, logreg, rf, mlp, knn, voting"


def _default(field: str) -> Any:
    """``TrainConfig``'s default for ``field``: options left unset take it, and --help shows it."""
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == field)


def train_cmd(
    labels: Annotated[str | None, typer.Option(
        "--labels", help="Label scheme (emotion8, emotion6, posneg, callcentre4). Default: the "
                         "largest scheme the ingested clips fully cover.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help=f"Model family: {_FAMILIES}. Default: the best on unseen speakers.")] = None,
    feature_set: Annotated[str, typer.Option(
        "--set", help=f"Feature set: rich, richvoice (rich and a pretrained voice encoder's "
                      f"embedding) or seed180. Default: {DEFAULT_SET}.")] = DEFAULT_SET,
    channel: Annotated[str, typer.Option(
        "--channel", help="Feature channel: telephony (8 kHz band-limited, for phone calls; "
                          "the default), or studio.")] = "telephony",
    augment: Annotated[bool | None, typer.Option(
        "--augment/--no-augment",
        help="Telephony: also train on phone-line copies of every clip (<set>+phone features: "
             "codecs, line noise, level changes, dropouts). Default: wherever the feature set "
             "has them for the channel (telephony).")] = None,
    corpus: Annotated[str | None, typer.Option(
        "--corpus", help="Train on one corpus only (default: all, via canonical emotions).")] = None,
    speaker_norm: Annotated[bool, typer.Option(
        "--speaker-norm/--no-speaker-norm",
        help="Z-score features per speaker (the big lever for unseen speakers). Telephony "
             "models also shrink each call role's statistics toward the nearest training "
             f"speakers' ({CALL_SPEAKER_PRIOR_ROWS:g} prior rows), so a calm call does not read "
             "half negative: chosen "
             "on calls of training speakers, see docs/features.md 'Training for calls'.")] = True,
    balance: Annotated[bool, typer.Option(
        "--balance/--no-balance", help="Class-balanced weights.")] = True,
    folds: Annotated[int, typer.Option(min=2, help="Actor-grouped CV folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for folds and models.")] = 0,
    search: Annotated[bool, typer.Option(
        "--search/--no-search", help="Nested grid search inside the training folds.")] = True,
    importance: Annotated[bool, typer.Option(
        "--importance/--no-importance", help="Permutation feature importance.")] = True,
    random_split: Annotated[bool, typer.Option(
        "--diagnostic-random-split", help="Also store a random-split UAR (labelled diagnostic; "
                                          "leaks speakers, never the headline).")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", help="Registered model name (default ser-SCHEME-SET-CHANNEL).")] = None,
    promote: Annotated[bool, typer.Option(
        "--promote-if-better", help="Point the alias at the new version if its UAR beats the "
                                    "current one on the same folds (or there is none).")] = False,
    alias: Annotated[str, typer.Option(help="Alias used by --promote-if-better.")] = "production",
    operating_point_calls: Annotated[int | None, typer.Option(
        "--operating-point-calls", min=0,
        help="Telephony: choose the escalation rules and confidence floor on this many "
             "generated 2-minute phone calls of the training speakers, each scored by the "
             "cross-validation model that never heard them (0: on pseudo-calls of the clips "
             f"only). Needs the clips' audio. Default: {_default('operating_point_calls')}.")] = None,
    compute_features: Annotated[bool, typer.Option(
        "--compute-features/--no-compute-features",
        help="First compute the features this training needs where clips lack them (as `ser "
             "features` would, with its workers).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train on stored features with speaker-independent CV and register a model version.\f

    Longer than 60 lines only because Typer reads the command's options from this signature;
    the body is a short sequence of the steps below.
    """
    config = _train_config(
        labels=labels, model=model, feature_set=feature_set, channel=channel, augment=augment,
        corpus=corpus, speaker_norm=speaker_norm, balance=balance, folds=folds, seed=seed,
        search=search, importance=importance, random_split=random_split,
        operating_point_calls=operating_point_calls)
    engine = open_database()
    ensure_voice_encoder([feature_set], channel, quiet=as_json)
    if compute_features:
        _compute_missing_features(engine, feature_set, channel, augment=config.augment,
                                  corpus=corpus, quiet=as_json)
    check = _preflight(engine, config)
    if not as_json:
        typer.echo(f"training {config.algorithm} on {check.n_clips} clips of {check.n_actors} "
                   f"actors, {check.label_scheme} ({', '.join(check.classes)}), features "
                   f"{feature_set}/{channel}{' + phone-line copies' if config.augment else ''}, "
                   f"{folds} actor-grouped folds", err=True)
    result = _run_train_flow(config, label_scheme=check.label_scheme, name=name,
                             promote=promote, alias=alias)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    _print_training(result, folds=folds, channel=channel)


def _train_config(*, labels: str | None, model: str | None, feature_set: str, channel: str,
                  augment: bool | None, corpus: str | None, speaker_norm: bool, balance: bool,
                  folds: int, seed: int, search: bool, importance: bool, random_split: bool,
                  operating_point_calls: int | None) -> TrainConfig:
    """The options as a ``TrainConfig``; exits (code 2, one line) on an unknown model family or
    channel. Phone-line copies and call-based operating points are for telephony only; an
    option left unset (None) takes ``TrainConfig``'s default."""
    from etl.features.specs import has_phone_copies
    from etl.training.models import default_algorithm, get_algorithm

    family = model or default_algorithm(feature_set)
    try:
        get_algorithm(family)
    except ValueError as exc:
        fail(str(exc))
    if channel not in ("studio", "telephony"):
        fail(f"--channel must be studio or telephony, not {channel!r}")
    if augment:  # asked for where there are no copies: train without them, as by default
        augment = has_phone_copies(feature_set, channel)
    if operating_point_calls is None:
        operating_point_calls = _default("operating_point_calls")
    try:
        return TrainConfig(
            algorithm=family, label_scheme=labels, feature_set=feature_set, channel=channel,
            corpus=corpus, speaker_normalisation=speaker_norm, class_balance=balance,
            n_folds=folds, seed=seed, search=search, feature_importance=importance,
            diagnostic_random_split=random_split, augment=augment,
            operating_point_calls=operating_point_calls)
    except ValueError as exc:  # a family the feature set cannot feed
        fail(str(exc))


def _preflight(engine: Engine, config: TrainConfig) -> Preflight:
    """Validate the data before Prefect starts; exits (code 2, one line) when training could
    not. Rolled back: it may create the feature_sets row."""
    from sqlalchemy.orm import Session

    from etl.training.dataset import TrainingDataError
    from etl.training.train import preflight

    with Session(engine) as session, session.begin():
        try:
            check = preflight(session, config)
        except TrainingDataError as exc:
            session.rollback()
            fail(str(exc))
        session.rollback()
    return check


def _run_train_flow(config: TrainConfig, *, label_scheme: str, name: str | None, promote: bool,
                    alias: str) -> dict[str, Any]:
    """Run flows/train.py with ``config``; its result dict (registered version, metrics)."""
    from dataclasses import replace

    from etl.training.dataset import TrainingDataError

    quiet_prefect()
    from flows.train import train_flow  # Prefect import is slow; keep `ser --help` fast

    try:
        with flow_settings():
            return train_flow(replace(config, label_scheme=label_scheme), name=name,
                              promote_if_better=promote, alias=alias, show_progress=is_tty())
    except TrainingDataError as exc:
        fail(str(exc).splitlines()[0])


def _print_training(result: dict[str, Any], *, folds: int, channel: str) -> None:
    """The registered version, its cross-validated metrics, calibration, operating point,
    aliases set and promotion, one line each (those present)."""
    typer.echo(f"registered {result['name']} v{result['version']} (version id "
               f"{result['model_version_id']}): UAR {result['cv_uar']:.3f} ± "
               f"{result['cv_uar_std']:.3f} over {folds} folds of unseen actors; accuracy "
               f"{result['pooled'].get('accuracy', float('nan')):.3f}, macro-F1 "
               f"{result['pooled'].get('macro_f1', float('nan')):.3f}")
    if "uar_phone" in result["pooled"]:
        typer.echo(f"on phone-line copies of the held-out actors' clips: UAR "
                   f"{result['pooled']['uar_phone']:.3f}")
    calibration = result["params"].get("calibration") or {}
    if calibration.get("method") not in (None, "none"):
        typer.echo(f"calibration: {calibration['method']} (fitted on out-of-fold "
                   f"{calibration.get('fitted_on', 'predictions')})")
    point = calibration.get("operating_point") or {}
    if point.get("rules"):
        rules = " or ".join(f"{r['metric']} {r['op']} {r['threshold']:g}" for r in point["rules"])
        typer.echo(f"escalation: {rules}, confidence floor {point['confidence_floor']:g}; on "
                   f"{point.get('n_calls', '?')} {point.get('chosen_on', 'pseudo-calls')} of the "
                   f"training speakers: rate {point['escalation_rate']:.2f}, precision "
                   f"{point['cv_precision'] if point['cv_precision'] is not None else 'n/a'} at "
                   f"recall {point['cv_recall']} (chosen on other speakers' calls)")
    if result.get("aliases_set"):
        typer.echo(f"{', '.join(result['aliases_set'])} -> version {result['model_version_id']} "
                   f"(first {channel} model; `ser score` uses it for matching audio)")
    if "diagnostic_random_split_uar" in result["pooled"]:
        typer.echo(f"diagnostic (speaker-leaking random split, not comparable): UAR "
                   f"{result['pooled']['diagnostic_random_split_uar']:.3f}")
    if result.get("promotion"):
        typer.echo(result["promotion"]["message"])


def _compute_missing_features(engine: Engine, feature_set: str, channel: str, *, augment: bool,
                              corpus: str | None, quiet: bool) -> None:
    """Extract what training needs and clips lack (a no-op when `ser features` already ran)."""
    from etl.features.specs import augmented_set_name, feature_spec
    from etl.runs.features import FeatureRunConfig, run_features

    names = [feature_set] + ([augmented_set_name(feature_set)] if augment else [])
    for name in names:
        try:
            feature_spec(name, channel)
        except ValueError as exc:
            fail(str(exc))
        config = FeatureRunConfig(set_name=name, channel=channel, corpus=corpus,
                                  workers=get_settings().workers)
        report = run_features(engine, config, progress=is_tty() and not quiet)
        if report.pending and not quiet:
            typer.echo(f"features {name}/{channel}: {report.stored} clips computed, "
                       f"{report.errors} errors ({report.seconds:.1f} s)", err=True)


@models_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Registered model versions, newest first, with aliases and CV UAR."""
    from db.engine import session_scope
    from etl.training.registry import list_versions

    with session_scope(open_database()) as session:
        rows = list_versions(session)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no models registered yet; train one with `ser train`")
        return
    header = ("id", "name", "ver", "algorithm", "labels", "features", "spk-norm", "clips",
              "UAR", "aliases", "created")
    table = [[str(r["id"]), r["name"], str(r["version"]), r["algorithm"], r["label_scheme"],
              f"{r['feature_set']}/{r['channel']} v{r['feature_set_version']}",
              "yes" if r["speaker_normalisation"] else "no", str(r["n_clips"]),
              "" if r["cv_uar"] is None else f"{r['cv_uar']:.3f}", ",".join(r["aliases"]),
              r["created_at"].strftime("%Y-%m-%d %H:%M")] for r in rows]
    typer.echo(_format_table(header, table))


@models_app.command("show")
def show_cmd(
    ref: Annotated[str, typer.Argument(help="Alias, version id, or name:version.")] = "production",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Provenance and evaluation of one model version."""
    from db.engine import session_scope
    from etl.reviews import site_summary
    from etl.training.registry import ModelNotFoundError, describe_version

    with session_scope(open_database()) as session:
        try:
            info = describe_version(session, ref)
        except ModelNotFoundError as exc:
            fail(str(exc))
        info["site"] = site_summary(session, int(info["id"]))
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    for key in ("id", "name", "version", "aliases", "algorithm", "label_scheme", "classes",
                "feature_set", "speaker_normalisation", "seed", "n_training_clips",
                "training_set_sha256", "folds_sha256", "code_version", "created_at", "artifact"):
        value = info[key]
        typer.echo(f"{key:>22}: {', '.join(value) if isinstance(value, list) else value}")
    typer.echo(f"{'cv UAR (fold mean)':>22}: {_num(info['cv_uar'])}")
    typer.echo(f"{'fold UAR':>22}: " + ", ".join(f"{k}={v:.3f}" for k, v in
                                                  info["fold_uar"].items()))
    typer.echo(f"{'pooled':>22}: " + ", ".join(f"{k}={v:.3f}" for k, v in
                                                info["pooled_metrics"].items()))
    for label, values in info["per_class"].items():
        typer.echo(f"{label:>22}: " + ", ".join(f"{k}={v:.3f}" for k, v in values.items()))
    if info["group_uar"]:
        typer.echo(f"{'UAR by group':>22}: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                      info["group_uar"].items()))
    if info["top_features"]:
        typer.echo(f"{'top features':>22}: " + ", ".join(f"{k} ({v:+.3f})" for k, v in
                                                      info["top_features"].items()))
    typer.echo(f"{'best params':>22}: {json.dumps(info['params'].get('best_params', {}))}")
    _print_site(info["site"])


def _print_site(site: dict[str, Any]) -> None:
    """The escalation point in use and what the site's reviews measured of it."""
    from ser.commands.review import _print_site as print_site

    print_site(site)


@models_app.command("promote")
def promote_cmd(
    ref: Annotated[str, typer.Argument(help="Version id, name:version or alias to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to point at it.")] = "production",
    reason: Annotated[str | None, typer.Option(help="Why (stored in alias_history).")] = None,
) -> None:
    """Point ALIAS (default production) at a model version; the move is recorded."""
    from db.engine import session_scope
    from etl.training.registry import ModelNotFoundError, resolve_version, set_alias

    with session_scope(open_database()) as session:
        try:
            target = resolve_version(session, ref)
            previous = set_alias(session, target.id, alias=alias,
                                 reason=reason or "manual promotion (ser models promote)")
        except ModelNotFoundError as exc:
            fail(str(exc))
    before = f" (was version {previous})" if previous is not None else ""
    typer.echo(f"{alias} -> version {target.id}{before}")


def predict_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Audio files or folders (recursive).")],
    model_ref: Annotated[str, typer.Option(
        "--model", help="Alias, version id or name:version.")] = "production",
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    speaker_by: Annotated[str, typer.Option(
        "--speaker-by", help="For speaker-normalised models: which files share a speaker: "
                             "folder (default), all, or file.")] = "folder",
) -> None:
    """Predicted emotion and class probabilities per file (ingested or not). No Prefect."""
    from sqlalchemy.orm import Session

    from etl.training.artifacts import ArtifactError
    from etl.training.loading import load_model
    from etl.training.predict import SPEAKER_BY, expand_paths, predict_files
    from etl.training.registry import ModelNotFoundError

    if fmt not in ("table", "csv", "json"):
        fail(f"--format must be table, csv or json, not {fmt!r}")
    if speaker_by not in SPEAKER_BY:
        fail(f"--speaker-by must be one of {', '.join(SPEAKER_BY)}, not {speaker_by!r}")
    try:
        files = expand_paths(paths)
    except FileNotFoundError as exc:
        fail(str(exc))
    if not files:
        fail("no audio files found in the given paths")
    engine = open_database()
    with Session(engine) as session:
        try:
            model = load_model(session, model_ref)
        except (ModelNotFoundError, ArtifactError) as exc:
            fail(str(exc))
    predictions, notes = predict_files(model, files, speaker_by=speaker_by)
    for note in notes:
        typer.secho(f"warning: {note}", fg=typer.colors.YELLOW, err=True)
    typer.echo(_render_predictions(predictions, model.classes, fmt, model.ref), nl=fmt != "csv")
    if all(p.error for p in predictions):
        raise typer.Exit(1)


def _render_predictions(predictions: list[Any], classes: list[str], fmt: str, ref: str) -> str:
    if fmt == "json":
        return json.dumps({"model": ref, "classes": classes,
                           "predictions": [p.__dict__ for p in predictions]}, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "emotion", "confidence", *(f"p_{c}" for c in classes), "error"])
        for p in predictions:
            writer.writerow([p.path, p.emotion or "", "" if p.confidence is None else
                             f"{p.confidence:.4f}",
                             *(f"{p.probabilities[c]:.4f}" if p.probabilities else ""
                               for c in classes), p.error or ""])
        return buffer.getvalue()
    header = ("file", "emotion", "conf", *classes)
    table = [[_short(p.path), p.emotion or f"ERROR: {p.error}",
              "" if p.confidence is None else f"{p.confidence:.2f}",
              *((f"{p.probabilities[c]:.2f}" for c in classes) if p.probabilities
                else ("" for _ in classes))] for p in predictions]
    return f"model {ref}\n" + _format_table(header, table)


def _short(path: str, width: int = 48) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]


def _format_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.add_typer(models_app, name="models")
    app.command("predict")(predict_cmd)


