"""Predict emotions of arbitrary audio files with a registered model (no Prefect, no ingest).

Used by ``ser predict``: decode each file, extract the model's feature set (same spec, same
channel simulation) and score it. When the model was trained with per-speaker normalisation, the
files are normalised per speaker group: by default the files of one folder are one speaker (the
layout of RAVDESS-like corpora and of per-agent exports); ``speaker_by="file"`` treats every file
as its own speaker and ``"all"`` treats everything given as one speaker.

A group with fewer than ``etl.training.normalise.MIN_ROWS_OWN_STATS`` files (a single clip, say) is
normalised toward the statistics of the most similar training speakers (stored with the model),
so a lone file still gets a sensible prediction (somewhat less accurate than with several clips of
the speaker, who then is their own baseline). Models registered before those statistics were
stored cannot do this: their small groups get a warning instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from etl.audio.decode import AudioError, is_audio_path, load_audio
from etl.features.extraction import extract
from etl.features.preparation import FeatureExtractionError
from etl.training.loading import LoadedModel

SPEAKER_BY = ("folder", "all", "file")
# For models without stored speaker statistics: fewer files than this in a speaker group
# makes its per-speaker statistics unreliable (and one file is normalised to all zeros).
MIN_FILES_PER_SPEAKER = 4


@dataclass
class FilePrediction:
    path: str
    emotion: str | None
    confidence: float | None
    probabilities: dict[str, float] = field(default_factory=dict)
    speaker: str | None = None
    error: str | None = None


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given plus audio files found (recursively, sorted) in given folders.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    """
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_audio_path(p)))
        elif path.exists():
            out.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return out


def speaker_key(path: Path, speaker_by: str) -> str:
    if speaker_by == "folder":
        return str(path.resolve().parent)
    if speaker_by == "file":
        return str(path.resolve())
    if speaker_by == "all":
        return "all"
    raise ValueError(f"speaker_by must be one of {', '.join(SPEAKER_BY)}; got {speaker_by!r}")


def predict_files(
    model: LoadedModel, paths: Sequence[Path], *, speaker_by: str = "folder",
) -> tuple[list[FilePrediction], list[str]]:
    """Predictions for each path (a row with ``error`` for files that cannot be scored).

    Returns
    -------
    (predictions, warnings)
        predictions in input order; warnings are human-readable notes (small speaker groups).
    """
    out = [FilePrediction(path=str(p), emotion=None, confidence=None) for p in paths]
    rows, ok = _extract_rows(model, paths, out=out)
    notes: list[str] = []
    if not ok:
        return out, notes
    X = np.vstack(rows).astype(np.float32)
    keys: list[str] | None = None
    if model.speaker_normalisation:
        keys = [speaker_key(Path(paths[i]), speaker_by) for i in ok]
        for i, key in zip(ok, keys, strict=True):
            out[i].speaker = key
        note = _speaker_group_note(model, keys, speaker_by=speaker_by)
        notes += [note] if note else []
    proba = model.predict_proba(X, speakers=keys)
    for row, i in enumerate(ok):
        k = int(proba[row].argmax())
        out[i].emotion = model.classes[k]
        out[i].confidence = float(proba[row, k])
        out[i].probabilities = {c: round(float(p), 4) for c, p in
                                zip(model.classes, proba[row], strict=True)}
    return out, notes


def _extract_rows(model: LoadedModel, paths: Sequence[Path], *,
                  out: list[FilePrediction]) -> tuple[list[np.ndarray], list[int]]:
    """``(feature vectors, their indices in paths)`` of the files that decode and extract; the
    others get their ``error`` set in ``out``."""
    rows: list[np.ndarray] = []
    ok: list[int] = []
    for i, path in enumerate(paths):
        try:
            signal, sr = load_audio(Path(path), sr=None, mono=True)
            rows.append(extract(signal, sr, model.feature_spec))
            ok.append(i)
        except FeatureExtractionError as exc:
            out[i].error = f"features: {exc.reason}"
        except (AudioError, OSError) as exc:
            out[i].error = f"decode: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return rows, ok


def _speaker_group_note(model: LoadedModel, keys: Sequence[str], *,
                        speaker_by: str) -> str | None:
    """The warning, if any, about how a speaker-normalised model treats these speaker groups
    (``keys``, one per file): small groups, or every group shrunk toward the training speakers."""
    sizes: dict[str, int] = {}
    for key in keys:
        sizes[key] = sizes.get(key, 0) + 1
    if model.speaker_population is None:
        small = {k: n for k, n in sizes.items() if n < MIN_FILES_PER_SPEAKER}
        if small:
            return (f"model {model.ref} normalises features per speaker; {len(small)} speaker "
                    f"group(s) (--speaker-by {speaker_by}) have fewer than "
                    f"{MIN_FILES_PER_SPEAKER} files, so their predictions are unreliable: pass "
                    f"several clips of each speaker together (or retrain the model: newer "
                    f"models handle single files)")
    elif np.isinf(model.speaker_population.min_rows_own):
        # Call models shrink every group toward the training population, whatever its size.
        return (f"model {model.ref} normalises each speaker group toward the most "
                "similar training speakers")
    else:
        min_rows = int(model.speaker_population.min_rows_own)
        small = {k: n for k, n in sizes.items() if n < min_rows}
        if small:
            return (f"{len(small)} speaker group(s) (--speaker-by {speaker_by}) have fewer "
                    f"than {min_rows} files: normalised toward the most similar training "
                    f"speakers; {min_rows}+ clips of one speaker together are more accurate")
    return None
