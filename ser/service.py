"""``ser serve --install``: the nightly schedule as a systemd service that survives a reboot.

The unit runs ``ser serve`` with the options given at install time; its environment (database,
home, inbox, Prefect server) comes from an ``EnvironmentFile`` readable by its owner only, because
``DATABASE_URL`` may hold a password. ``Restart=always`` brings the schedule back after a crash;
the background Prefect server it starts lives in the unit's cgroup and stops with it.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "ser-nightly.service"
# Variables worth carrying into the service: where the data is and how flows report.
SERVICE_ENV = ("DATABASE_URL", "SER_HOME", "SER_INBOX", "SER_WORKERS", "SER_NIGHTLY_CRON",
               "SER_RULES", "SER_ESCALATION_RULES", "SER_REPORTS_DIR", "SER_PREFECT_SERVER",
               "PREFECT_API_URL", "PREFECT_API_KEY")


@dataclass(frozen=True, slots=True)
class InstalledService:
    unit_path: Path
    env_path: Path
    user_unit: bool

    def next_steps(self) -> list[str]:
        flag = " --user" if self.user_unit else ""
        steps = [f"systemctl{flag} daemon-reload",
                 f"systemctl{flag} enable --now {self.unit_path.name}",
                 f"journalctl{flag} -u {self.unit_path.name} -f    # its log"]
        if self.user_unit:  # a user's units start at boot only with lingering on
            steps.insert(0, f"loginctl enable-linger {os.environ.get('USER', '$USER')}")
        return steps


def _quote(arg: str) -> str:
    # systemd splits ExecStart like a shell, with its own escapes: quote what has spaces.
    return f'"{arg}"' if any(c in arg for c in " \t'\\\"") else arg


def unit_text(*, serve_args: list[str], env_path: Path, user_unit: bool,
              python: str = sys.executable, working_dir: Path | None = None) -> str:
    """The unit file's text for ``python -m ser serve *serve_args``."""
    exec_start = " ".join(_quote(a) for a in [python, "-m", "ser", "serve", *serve_args])
    lines = [
        "[Unit]",
        "Description=ser-analytics nightly call scoring (Prefect deployment)",
        "After=network-online.target postgresql.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"EnvironmentFile={env_path}",
        f"ExecStart={exec_start}",
        *( [f"WorkingDirectory={working_dir}"] if working_dir else []),
        "Restart=always",
        "RestartSec=30",
        # ser serve stops its schedule on SIGINT like Ctrl-C; give a running batch time to
        # finish its current call (a killed one resumes on the next run anyway).
        "KillSignal=SIGINT",
        "TimeoutStopSec=120",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user_unit else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)


def env_text(environ: dict[str, str]) -> str:
    lines = [f"{k}={shlex.quote(environ[k])}" for k in SERVICE_ENV if environ.get(k)]
    lines.append(f"PATH={shlex.quote(environ.get('PATH', '/usr/bin:/bin'))}")
    return "\n".join(lines) + "\n"


def default_unit_dir() -> tuple[Path, bool]:
    """``/etc/systemd/system`` for root, else the user's unit folder; and whether it is a user's."""
    if os.geteuid() == 0:
        return Path("/etc/systemd/system"), False
    config = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return config / "systemd" / "user", True


def install_service(*, serve_args: list[str], home: Path, unit_dir: Path | None = None,
                    environ: dict[str, str] | None = None) -> InstalledService:
    """Write the unit and its environment file (mode 0600); systemctl is left to the operator."""
    environ = dict(os.environ if environ is None else environ)
    if unit_dir is None:
        unit_dir, user_unit = default_unit_dir()
    else:
        user_unit = "systemd/user" in str(unit_dir) or os.geteuid() != 0
    environ.setdefault("SER_HOME", str(home))
    home.mkdir(parents=True, exist_ok=True)
    env_path = home / "ser-nightly.env"
    fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(env_text(environ))
    os.chmod(env_path, 0o600)
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path = unit_dir / UNIT_NAME
    unit_path.write_text(unit_text(serve_args=serve_args, env_path=env_path, user_unit=user_unit,
                                   working_dir=home))
    return InstalledService(unit_path, env_path, user_unit)
