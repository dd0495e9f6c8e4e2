"""`ser encoder install [--force]`, `ser encoder show [--json]`: the voice encoder's weights.

The ``richvoice`` feature set embeds speech with resemblyzer's pretrained GE2E encoder
(:mod:`etl.features.voice`, a numpy port: no torch). Its weights install from PyPI into the
virtualenv, shared by every SER_HOME; neither command touches the database.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ser.runtime import fail

encoder_app = typer.Typer(
    help="The pretrained voice encoder's weights (resemblyzer 0.1.4 from PyPI, without torch).",
    no_args_is_help=True)


@encoder_app.command("install")
def install_cmd(
    force: Annotated[bool, typer.Option("--force",
                                        help="Download and write again even if present.")] = False,
) -> None:
    """Download the resemblyzer wheel with pip (no dependencies), check and install its weights.

    Prints where the weights went and their sha256. Exit code 2 if pip or the check failed.
    """
    from etl.features.voice.params import VoiceEncoderError
    from etl.features.voice.weights import install_weights, license_path, weights_status

    try:
        path = install_weights(force=force, progress=lambda line: typer.echo(line, err=True))
    except VoiceEncoderError as exc:
        fail(str(exc))
    status = weights_status(path=path)
    typer.echo(f"weights  {path}")
    typer.echo(f"sha256   {status.sha256}")
    typer.echo(f"license  {license_path(path)} (Apache-2.0)")


@encoder_app.command("show")
def show_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Where the weights belong, whether they are there and intact.

    Exit code 1 if they are missing or altered (``ser encoder install [--force]`` fixes both).
    """
    from etl.features.voice.params import WEIGHTS_SHA256, encoder_params
    from etl.features.voice.weights import weights_status

    status = weights_status()
    if as_json:
        typer.echo(json.dumps({"path": str(status.path), "present": status.present,
                               "sha256": status.sha256, "sha256_ok": status.ok,
                               "expected_sha256": WEIGHTS_SHA256, "encoder": encoder_params()},
                              indent=2))
    else:
        params = encoder_params()
        typer.echo(f"encoder  {params['name']} ({params['package']} {params['package_version']})")
        typer.echo(f"weights  {status.path}")
        if not status.present:
            typer.echo("status   missing: run `ser encoder install`")
        elif not status.ok:
            typer.echo(f"status   ALTERED (sha256 {status.sha256}, expected {WEIGHTS_SHA256}): "
                       f"run `ser encoder install --force`")
        else:
            typer.echo(f"status   ok (sha256 {status.sha256})")
    if not status.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(encoder_app, name="encoder")
