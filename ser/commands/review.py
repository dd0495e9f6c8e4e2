"""`ser review add|queue|pending|estimate` and `ser calibrate`: supervisors' verdicts on calls,
what to listen to next, and the site operating point chosen on the verdicts (``--revert``: the
model's own point again) (docs/reviews.md).

None of these starts Prefect or touches audio. Without ``--model`` they work on the model
version of the most recent scored batch: the one nightly scoring uses now.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from config import get_settings
from ser.runtime import fail, open_database

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

review_app = typer.Typer(help="Supervisors' verdicts: judge calls, draw what to listen to, "
                              "estimate precision and recall.", no_args_is_help=True)

ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Alias, version id or name:version (default: the model of the latest "
                    "scored batch).")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who (default: your user name).")]


def _who(by: str | None) -> str:
    return by.strip() if by and by.strip() else getpass.getuser()


def _model_id(session: Session, ref: str | None) -> int:
    from etl.reviews.queue import latest_scoring_model
    from etl.training.registry import ModelNotFoundError, resolve_version

    if ref:
        try:
            return int(resolve_version(session, ref).id)
        except ModelNotFoundError as exc:
            fail(str(exc))
    found = latest_scoring_model(session)
    if found is None:
        fail("no scored batch yet; score one with `ser score` (or give --model)")
    return int(found)


def _date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not a date (YYYY-MM-DD)")


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _pct(estimate: dict[str, Any] | None) -> str:
    if not estimate:
        return "–"
    return (f"{estimate['value']:.2f} ({estimate['level']:.0%} interval "
            f"{estimate['low']:.2f}–{estimate['high']:.2f})")


@review_app.command("add")
def add_cmd(
    call_id: Annotated[int, typer.Argument(help="Call id (the call report's number).")],
    verdict: Annotated[str, typer.Argument(
        help="right: the escalation decision (escalated or not) was right; wrong: it was not.")],
    emotion: Annotated[str | None, typer.Option(
        "--emotion", help="The customer's emotion as you heard it (optional).")] = None,
    note: Annotated[str | None, typer.Option("--note", help="A note (optional).")] = None,
    by: ByOpt = None,
) -> None:
    """Record a verdict on one call; judging a call again keeps the earlier verdicts."""
    from db.engine import session_scope
    from etl.reviews import Verdict, record_reviews

    try:
        item = Verdict(call_id=call_id, verdict=verdict.strip().lower(),
                       customer_emotion=emotion, note=note)
    except ValueError as exc:
        fail(str(exc))
    try:
        with session_scope(open_database()) as session:
            (review_id,) = record_reviews(session, [item], reviewed_by=_who(by))
    except ValueError as exc:
        fail(f"{exc}; see the call ids in `ser review pending` or the reports")
    typer.echo(f"review {review_id}: call {call_id} judged {item.verdict} by {_who(by)}")


@review_app.command("queue")
def queue_cmd(
    model: ModelOpt = None,
    nights: Annotated[int, typer.Option("--nights", min=1,
                                        help="The last N scored nights.")] = 7,
    first: Annotated[str | None, typer.Option("--from", help="First batch date (with --to).")] = None,
    last: Annotated[str | None, typer.Option("--to", help="Last batch date.")] = None,
    sample: Annotated[int | None, typer.Option("--sample", min=0, help="How many calls that "
                                               "were not escalated to draw at random "
                                               "[default: 20].")] = None,
    budget: Annotated[int | None, typer.Option(
        "--budget", min=1, help="Draw at most N calls in all, at least half of them not "
        "escalated when the escalations alone would take more (those are then sampled "
        "too); instead of --sample.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random draw.")] = 0,
    by: ByOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Draw calls to listen to: every escalated call plus a random sample of the others, each
    stored with its sampling probability (calls drawn before are not drawn again). With
    --budget, at most N calls split between escalated and not escalated."""
    from dataclasses import asdict

    from db.engine import session_scope
    from etl.reviews import draw_queue
    from etl.reviews.queue import scored_nights

    if budget is not None and sample is not None:
        fail("give --budget or --sample, not both: the budget decides how many calls that "
             "were not escalated are drawn")
    with session_scope(open_database()) as session:
        mv_id = _model_id(session, model)
        if first or last:
            start = _date(first or last or "", "--from")
            end = _date(last or first or "", "--to")
        else:
            days = scored_nights(session, model_version_id=mv_id, nights=nights)
            if not days:
                fail(f"no scored batch with model version {mv_id}; score one with `ser score`")
            start, end = days[0], days[-1]
        draw = draw_queue(session, model_version_id=mv_id, first_date=start, last_date=end,
                          sample_size=20 if sample is None else sample, seed=seed,
                          created_by=_who(by), budget=budget)
    if as_json:
        typer.echo(json.dumps(asdict(draw), indent=2, default=str))
        return
    if draw.queue_id is None:
        typer.echo(f"nothing to draw: no scored call of model version {mv_id} from {start} to "
                   f"{end} that is not in a queue already")
        return
    picked = sum(1 for c in draw.calls if c.stratum != "escalated")
    escalated = (f"{draw.n_escalated} escalated calls"
                 if draw.escalated_size == draw.n_escalated
                 else f"{draw.escalated_size} of {draw.n_escalated} escalated calls")
    within = "" if budget is None else f", budget {budget}"
    typer.echo(f"queue {draw.queue_id} (model version {mv_id}, {start} to {end}): "
               f"{escalated} and {picked} of {draw.n_not_escalated} not escalated "
               f"(seed {seed}{within})")
    _print_calls(draw.calls)


def _print_calls(calls: list[Any]) -> None:
    for c in calls:
        rule = c.escalation_rule or "not escalated"
        done = "  (judged)" if c.reviewed else ""
        typer.echo(f"  call {c.call_id:>7}  {c.batch_date}  {c.call_key:<28} {rule:<26} "
                   f"p={c.probability:.3f}{done}")
    typer.echo("judge each with `ser review add CALL_ID right|wrong`")


@review_app.command("pending")
def pending_cmd(model: ModelOpt = None) -> None:
    """Calls drawn into review queues that nobody has judged yet."""
    from db.engine import session_scope
    from etl.reviews.queue import queue_calls

    with session_scope(open_database()) as session:
        calls = queue_calls(session, model_version_id=_model_id(session, model),
                            pending_only=True)
    if not calls:
        typer.echo("nothing pending: draw calls with `ser review queue`")
        return
    typer.echo(f"{len(calls)} call{'s' if len(calls) != 1 else ''} to judge:")
    _print_calls(calls)


@review_app.command("estimate")
def estimate_cmd(
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Precision and recall of the escalation point in use, measured on the reviewed calls."""
    from db.engine import session_scope
    from etl.reviews import site_summary

    with session_scope(open_database()) as session:
        mv_id = _model_id(session, model)
        summary = site_summary(session, mv_id)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    _print_site(summary)


def _print_site(summary: dict[str, Any]) -> None:
    estimate = summary["estimate"] or {}
    typer.echo(f"{'escalation point':>22}: {summary['source']}")
    typer.echo(f"{'reviews':>22}: {summary['n_reviews']} ({summary['n_queue_reviews']} from "
               "review queues, used for the estimates)")
    typer.echo(f"{'site precision':>22}: {_pct(estimate.get('precision'))}")
    typer.echo(f"{'site recall':>22}: {_pct(estimate.get('recall'))}")
    training = summary.get("training")
    if training:
        typer.echo(f"{'training estimate':>22}: precision {_num(training['precision'])}, "
                   f"recall {_num(training['recall'])} (generated calls of the training "
                   "speakers)")
    if not summary["enough_reviews"]:
        typer.echo(f"{'':>22}  too few reviews for a decision yet: draw with `ser review "
                   "queue`, judge with `ser review add`")


def calibrate_cmd(
    model: ModelOpt = None,
    target: Annotated[float, typer.Option("--target-precision", min=0.01, max=0.99,
                                          help="Precision to reach.")] = 0.8,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the change on the last "
                                          "nights; store nothing.")] = False,
    nights: Annotated[int, typer.Option("--nights", min=1, help="Nights --dry-run shows.")] = 3,
    revert: Annotated[bool, typer.Option(
        "--revert", help="Go back to the model's own operating point from the next batch "
                         "(stored as an audited record; earlier site points stay in the "
                         "history).")] = False,
    by: ByOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Choose the escalation threshold the reviewed calls support and store it as the model
    version's site operating point: a new threshold only where the reviews show with 90%
    confidence that it reaches the target precision, the point in use unless they show with 90%
    confidence that it misses it, and of those the best recall (docs/reviews.md)."""
    from dataclasses import asdict

    if revert:
        if dry_run:
            fail("--revert stores a record and has no --dry-run; `ser review estimate` shows "
                 "the point in use")
        _revert(model, by=by, as_json=as_json)
        return

    from db.engine import session_scope
    from etl.reviews import CalibrationError, calibrate
    from etl.reviews.queue import scored_nights
    from etl.scoring.escalation import rules_from_data
    from etl.scoring.rules_preview import preview_rules

    previews = []
    try:
        with session_scope(open_database()) as session:
            mv_id = _model_id(session, model)
            result = calibrate(session, model_version_id=mv_id, target_precision=target,
                               created_by=_who(by), dry_run=dry_run)
            if dry_run:
                rules = rules_from_data(result.rules_after)
                for day in scored_nights(session, model_version_id=mv_id, nights=nights):
                    previews.append(preview_rules(session, rules, batch_date=day,
                                                  model_version_id=mv_id))
    except CalibrationError as exc:
        fail(str(exc))
    if as_json:
        data = asdict(result)
        data["nights"] = [{"batch_date": p.batch_date.isoformat(), "n_scored": p.n_scored,
                           "escalated_now": p.n_stored_escalations,
                           "would_escalate": len(p.calls)} for p in previews]
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    before, after = asdict(result.before), asdict(result.after)
    typer.echo(f"model version {mv_id}, {len(result.review_ids)} reviewed calls, target "
               f"precision {target:g}")
    c = f"{result.confidence:.0%}"
    typer.echo(f"  rule:   a new threshold only where the reviews show precision >= {target:g} "
               f"with {c} confidence (one-sided); the point in use unless they show with {c} "
               "confidence that it misses; of those, the best recall")
    typer.echo(f"  before: {_rules(result.rules_before)}")
    typer.echo(f"          precision {_pct(before['precision'])}, recall {_pct(before['recall'])}")
    typer.echo(f"  after:  {_rules(result.rules_after)}")
    typer.echo(f"          precision {_pct(after['precision'])}, recall {_pct(after['recall'])}")
    typer.echo(f"  why:    {result.reason}")
    for p in previews:
        typer.echo(f"  {p.batch_date}: {len(p.calls)} of {p.n_scored} calls would escalate "
                   f"({p.n_stored_escalations} escalated when scored)")
    if get_settings().rules:
        typer.secho("warning: SER_RULES is set: scoring uses those rules, not the site point, "
                    "until it is unset", err=True, fg=typer.colors.YELLOW)
    if dry_run:
        typer.echo("dry run: nothing stored")
    elif not result.changed:
        typer.echo(f"the point in use stays; stored as site point {result.site_point_id} with "
                   "the same rules (audited)")
    else:
        typer.echo(f"stored as site point {result.site_point_id}: nightly scoring uses it from "
                   "the next batch")


def _revert(model: str | None, *, by: str | None, as_json: bool) -> None:
    """`ser calibrate --revert`: the model's own point again, audited."""
    from dataclasses import asdict

    from db.engine import session_scope
    from etl.reviews import CalibrationError, revert

    try:
        with session_scope(open_database()) as session:
            result = revert(session, model_version_id=_model_id(session, model),
                            created_by=_who(by))
    except CalibrationError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(asdict(result), indent=2))
        return
    typer.echo(f"model version {result.model_version_id}: site point "
               f"{result.retired_site_point_id} retired")
    typer.echo(f"  before: {_rules(result.rules_before)}")
    typer.echo(f"  after:  {_rules(result.rules_after)} ({result.source_after})")
    if get_settings().rules:
        typer.secho("warning: SER_RULES is set: scoring uses those rules, not the model's point, "
                    "until it is unset", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"stored as record {result.site_point_id}: nightly scoring uses the model's own "
               "point from the next batch")


def _rules(rules: list[dict[str, Any]]) -> str:
    from etl.scoring.escalation import rules_from_data

    return "; ".join(f"{r.name}: {r}" for r in rules_from_data(rules))


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
    app.command("calibrate")(calibrate_cmd)
