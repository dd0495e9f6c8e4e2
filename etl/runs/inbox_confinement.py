"""Which files a batch may read, and which folder a nightly run may score.

A batch folder is a drop zone: whoever can write a ``calls.csv`` there could point the scorer at
any file the service account can read. So every recording a batch reads must resolve (after
following symbolic links) inside the batch folder, or under one of the extra roots the operator
lists (``SER_BATCH_ROOTS``, passed in as ``allowed_roots``); anything else is :data:`OUTSIDE`
the batch folder and is never opened (:func:`contained`, checked at discovery and again right
before a worker opens the file). A nightly run scores only the configured inbox or a folder
inside it (:func:`confined_inbox`). Reasons name files relative to the batch folder, never by
host path (:func:`relative_reason`), because they reach analysts through
``analytics.calls.error``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

OUTSIDE = "outside the batch folder"


def is_inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` (already resolved) is one of ``roots`` or below one.

    Compared as text (both sides are resolved, absolute paths): a row of a large calls.csv
    costs no path parsing.
    """
    text = str(path)
    return any(text == str(root) or text.startswith(str(root).rstrip(os.sep) + os.sep)
               for root in roots)


def contained(path: Path, *, root: Path, allowed_roots: Sequence[Path] = ()) -> bool:
    """Whether ``path``, with every symbolic link followed, stays under ``root`` (or an allowed
    root). Checked at discovery and again right before a worker opens the file."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return is_inside(resolved, (Path(root).resolve(), *allowed_roots))


class InboxError(ValueError):
    """A nightly run was asked to score a folder that is not the configured inbox."""


def confined_inbox(requested: str | Path | None, *, configured: Path) -> Path:
    """The folder a nightly run scores: ``configured`` (created if missing), or an existing
    folder inside it that ``requested`` names.

    A flow run's parameters come from whoever can reach the Prefect API, so they may not name
    another folder to read or create: the inbox is the service's own setting (``SER_INBOX``).
    """
    inbox = Path(configured).expanduser().resolve()
    if requested is None or str(requested) == "":
        inbox.mkdir(parents=True, exist_ok=True)
        return inbox
    folder = Path(requested).expanduser()
    if not folder.is_absolute():
        raise InboxError(f"inbox {str(requested)!r} is not an absolute path; the nightly run "
                         f"scores {inbox} (SER_INBOX)")
    resolved = folder.resolve()
    if resolved == inbox:
        inbox.mkdir(parents=True, exist_ok=True)
        return inbox
    if not is_inside(resolved, (inbox,)) or not resolved.is_dir():
        raise InboxError(f"inbox {str(requested)!r} is not the configured inbox {inbox} or a "
                         "folder inside it; set SER_INBOX (or ser serve --inbox) for the "
                         "service instead of a run parameter")
    return resolved


def relative_reason(reason: str, *, root: Path) -> str:
    """``reason`` with the batch folder's host path removed (files named relative to it)."""
    base = str(Path(root).resolve())
    return reason.replace(base + os.sep, "").replace(base, ".")
