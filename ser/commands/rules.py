"""`ser rules check FILE`, `ser rules preview [FILE] --batch-date D`: escalation rules before use.

Neither command starts Prefect or touches audio: ``check`` only parses the file, ``preview``
reads the stored summaries of a scored batch (:mod:`etl.scoring.rules_preview`). Without a
FILE, ``preview`` takes the rules ``ser score`` would use: ``SER_RULES``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from config import get_settings
from ser.runtime import fail, open_database

if TYPE_CHECKING:
    from etl.scoring.escalation import EscalationRule

rules_app = typer.Typer(help="Escalation rules: validate a rules file, preview it on a batch.",
                        no_args_is_help=True)

RulesFile = Annotated[Path, typer.Argument(help="Rules file (.toml or .json; docs/rules.md).")]
# How many calls `preview` lists per rule before summing up the rest.
MAX_CALL_LINES = 20


def _load(path: Path) -> list[EscalationRule]:
    from etl.scoring.escalation import read_rules

    if not path.is_file():
        fail(f"rules file {path} does not exist")
    try:
        return read_rules(path)
    except ValueError as exc:
        fail(str(exc))


def _preview_rules(path: Path | None) -> tuple[list[EscalationRule], str]:
    """The rules to preview and how to name them: FILE, else ``SER_RULES`` (a file or inline)."""
    if path is not None:
        return _load(path), path.name
    from etl.scoring.escalation import read_rules

    source = get_settings().rules
    if source is None or not source.strip():
        fail("give a rules FILE or set SER_RULES (a .toml/.json file or inline JSON)")
    try:
        rules = read_rules(source)
    except ValueError as exc:
        fail(f"SER_RULES: {exc}")
    text = source.strip()
    return rules, ("SER_RULES" if text.startswith(("[", "{")) else Path(text).name)


@rules_app.command("check")
def check_cmd(path: RulesFile) -> None:
    """Validate a rules file: one line per rule, or the first problem (exit code 2)."""
    rules = _load(path)
    width = max(len(r.name) for r in rules) if rules else 0
    for rule in rules:
        note = f"  ({rule.description})" if rule.description else ""
        typer.echo(f"{rule.name:<{width}}  {rule}{note}")
    typer.echo(f"{len(rules)} rule{'s' if len(rules) != 1 else ''} OK in {path}")


@rules_app.command("preview")
def preview_cmd(
    path: Annotated[Path | None, typer.Argument(
        help="Rules file (.toml or .json; docs/rules.md). Default: SER_RULES.")] = None,
    batch_date: str = typer.Option(..., "--batch-date", help="Scored batch date YYYY-MM-DD."),
    model: str | None = typer.Option(None, "--model", help="Only batches scored with this model "
                                     "(alias, version id or name:version; default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the preview as JSON."),
) -> None:
    """The calls of an already-scored batch these rules would escalate (nothing is rescored)."""
    from db.engine import session_scope
    from etl.scoring.rules_preview import preview_rules
    from etl.training.registry import ModelNotFoundError, resolve_version
    from ser.commands.score import _parse_date

    rules, name = _preview_rules(path)
    day = _parse_date(batch_date)
    engine = open_database()
    try:
        with session_scope(engine) as session:
            mv_id = resolve_version(session, model).id if model else None
            preview = preview_rules(session, rules, batch_date=day, model_version_id=mv_id)
    except ModelNotFoundError as exc:
        fail(str(exc))
    if not preview.batch_ids:
        fail(f"no scored calls on {day.isoformat()}"
             + (f" with model {model}" if model else "") + "; score them with `ser score`")
    if as_json:
        typer.echo(json.dumps(preview.as_dict(), indent=2))
        return
    typer.echo(f"{name} on {day.isoformat()}: {preview.n_scored} scored calls "
               f"(batch{'es' if len(preview.batch_ids) > 1 else ''} "
               f"{', '.join(map(str, preview.batch_ids))})")
    for rule in rules:
        hits = [c for c in preview.calls if rule.name in c.rules]
        typer.echo(f"  {rule.name}: {len(hits)} call{'s' if len(hits) != 1 else ''}  [{rule}]")
        for call in hits[:MAX_CALL_LINES]:
            first = "" if call.escalation_rule == rule.name else (
                f"  (escalates as {call.escalation_rule})")
            typer.echo(f"    {call.call_key}  agent {call.agent_id or '-'}  queue "
                       f"{call.queue or '-'}{first}")
        if len(hits) > MAX_CALL_LINES:
            typer.echo(f"    ... and {len(hits) - MAX_CALL_LINES} more (--json lists all)")
    typer.echo(f"{len(preview.calls)} of {preview.n_scored} calls would escalate "
               f"(first rule wins); {preview.n_stored_escalations} escalated when scored.")


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")
