"""Demo data: a small labelled CREMA-D-style corpus of synthetic speech, its demographics CSV,
and the SQL the demo suggests trying. Plain functions, no database, no Prefect.

The corpus follows CREMA-D's real naming (``1001_DFA_ANG_XX.wav``: actor, sentence, emotion,
level) and ships a ``VideoDemographics.csv`` in CREMA-D's format (ActorID, Age, Sex, Race,
Ethnicity), so ingest, training and the model report's demographic breakdowns all run on the
same paths as with the real corpus. Deterministic: the same config writes byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from etl.corpora.demographics import CREMAD_RACES
from etl.corpora.parsers import CREMAD_EMOTIONS
from etl.synthetic.speech import Voice, hash_seed, synthesize

# CREMA-D emotion codes (canonical emotion -> code) and a few of its sentence codes.
CREMAD_CODES: dict[str, str] = {emotion: code for code, emotion in CREMAD_EMOTIONS.items()}
SENTENCES: tuple[str, ...] = ("DFA", "IEO", "IOM", "ITH", "TIE", "WSI")
DEMOGRAPHICS_FILE = "VideoDemographics.csv"
MARKER_FILE = ".demo-corpus.json"


@dataclass(frozen=True, slots=True)
class DemoCorpusConfig:
    """Size of the demo corpus: ``len(actors) * 6 emotions * sentences`` clips."""

    actors: tuple[int, ...] = tuple(range(1, 13))
    sentences: int = 2
    sr: int = 16000
    duration_s: float = 2.0

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def actor_code(actor: int) -> str:
    """CREMA-D actor ids are 1001..1091."""
    return f"{1000 + actor}"


def write_cremad_corpus(root: Path, config: DemoCorpusConfig = DemoCorpusConfig()) -> list[Path]:
    """Write the corpus and its demographics under ``root``; return the audio paths.

    Idempotent: when ``root`` already holds a corpus written with the same config (a marker
    file records its fingerprint), nothing is rewritten, so re-ingesting finds identical files.
    """
    root = Path(root)
    marker = root / MARKER_FILE
    paths = [root / f"{actor_code(a)}_{SENTENCES[s % len(SENTENCES)]}_{code}_XX.wav"
             for a in config.actors for code in CREMAD_CODES.values()
             for s in range(config.sentences)]
    if marker.exists() and json.loads(marker.read_text()).get("fingerprint") == \
            config.fingerprint() and all(p.exists() for p in paths):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    emotions = {code: emotion for emotion, code in CREMAD_CODES.items()}
    for path in paths:
        actor_id, sentence, code, _ = path.stem.split("_")
        actor = int(actor_id) - 1000
        seed = hash_seed("demo-cremad", actor, sentence, code)
        # Acted intensity varies from subtle to strong, as in CREMA-D; subtle clips sit close to
        # neutral, which keeps the task from being trivially separable.
        intensity = 0.45 + (seed % 1000) / 1000.0
        signal = synthesize(emotions[code], voice=Voice.for_actor(actor), seed=seed,
                            duration_s=config.duration_s, sr=config.sr, intensity=intensity)
        sf.write(str(path), signal, config.sr, subtype="PCM_16")
    write_demographics(root / DEMOGRAPHICS_FILE, config.actors)
    marker.write_text(json.dumps({"fingerprint": config.fingerprint(), "files": len(paths)}))
    return paths


def write_demographics(path: Path, actors: Sequence[int]) -> Path:
    """A CREMA-D ``VideoDemographics.csv`` for ``actors`` (sex matches the synthetic voice)."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
        for actor in actors:
            rng = np.random.default_rng(hash_seed("demo-demographics", actor))
            female = Voice.for_actor(actor).base_f0 > 160  # the voice decides, as it would
            writer.writerow([actor_code(actor), int(rng.integers(20, 70)),
                             "Female" if female else "Male",
                             CREMAD_RACES[int(rng.integers(len(CREMAD_RACES)))],
                             "Hispanic" if rng.random() < 0.2 else "Not Hispanic"])
    return Path(path)


# Three questions an analyst might ask first, against the stable analytics views.
DEMO_QUERIES: tuple[tuple[str, str], ...] = (
    ("The ten most severe escalations, with the rule that fired",
     ("SELECT call_key, batch_date, queue, agent_id, escalation_rule,\n"
     "       round(negative_share_customer::numeric, 2) AS customer_negative\n"
     "FROM analytics.escalations\n"
     "ORDER BY longest_negative_streak_s DESC LIMIT 10;")),
    ("How negative customers sounded, per queue and night",
     ("SELECT batch_date, queue,\n"
     "       round((sum(duration_s) FILTER (WHERE is_negative) / sum(duration_s))::numeric, 3)\n"
     "         AS customer_negative_share\n"
     "FROM analytics.segments WHERE role = 'customer'\n"
     "GROUP BY batch_date, queue ORDER BY batch_date, queue;")),
    ("Minutes of speech per role and predicted emotion",
     ("SELECT role, emotion, round(sum(speech_s)::numeric / 60, 1) AS minutes\n"
     "FROM analytics.daily_trends\n"
     "GROUP BY role, emotion ORDER BY role, minutes DESC;")),
)
