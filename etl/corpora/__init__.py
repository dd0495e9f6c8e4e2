"""Corpora: the emotion vocabulary, label schemes and negative emotions (``labels``), actor
demographics and age bands (``demographics``), file-name parsers for each corpus (``parsers``),
ingest into the database (the engine ``ingest``, what its steps report ``ingest_run``), manifest
CSVs (``manifest``) and CREMA-D's demographics and crowd votes (``cremad_demographics``,
``cremad_votes``).

``__all__`` lists the names callers outside ``etl.corpora`` use; each is imported from its
module on first use (``etl.public``).
"""

from etl.public import Exports

_EXPORTS = Exports(__name__, {
    "etl.corpora.cremad_demographics": ("load_demographics",),
    "etl.corpora.cremad_votes": ("load_votes",),
    "etl.corpora.demographics": ("AGE_BAND_LABELS", "CREMAD_RACES", "age_band", "parse_age"),
    "etl.corpora.ingest": (
        "DEFAULT_CHUNK_SIZE", "check_folder", "finish_run", "folder_candidates", "ingest_folder",
        "iter_ingest_chunks", "start_run",
    ),
    "etl.corpora.ingest_run": ("IngestCounts", "IngestInputError", "IngestProblem"),
    "etl.corpora.labels": (
        "CANONICAL_EMOTIONS", "ESCALATED_SHARE", "NEGATIVE_CLASSES", "NEGATIVE_EMOTIONS",
        "is_negative_class", "map_emotion", "scheme_classes",
    ),
    "etl.corpora.manifest": ("load_manifest", "manifest_candidates"),
    "etl.corpora.parsers": (
        "CORPORA", "CREMAD_EMOTIONS", "EMODB_EMOTIONS", "FOLDER_CORPORA", "MANIFEST",
        "RAVDESS_EMOTIONS", "SAVEE_EMOTIONS", "TESS_EMOTIONS", "check_corpus", "ClipNameError",
        "parse_ravdess",
    ),
})
__all__ = _EXPORTS.names  # noqa: PLE0605 - the names above, listed once
__getattr__ = _EXPORTS.resolve
