"""Synthetic data: deterministic emotional speech, generated stereo calls, the demo corpus, small
corpus fixtures and database history for tests, the demo and the benchmarks.

Generated calls are four modules of one idea each: the clips they are made of (``clips``), the
non-speech sounds they carry (``nonspeech``), the phone line they go through (``line``) and
their ground truth (``timeline``); ``calls`` composes and writes them. Database history
(``history``) inserts rows whose numbers two pure modules simulate: a model version's
cross-validation metrics (``fold_metrics``) and a scored call's windows and summary
(``scored_calls``).

``__all__`` lists the names callers outside ``etl.synthetic`` use; each is imported from its
module on first use (``etl.public``).
"""

from etl.public import Exports

_EXPORTS = Exports(__name__, {
    "etl.synthetic.calls": (
        "ROLES", "SCENARIO_WEIGHTS", "SCENARIOS", "CallGenConfig", "compose_call",
        "generate_calls", "GeneratedCall",
    ),
    "etl.synthetic.clips": ("bank_from_source", "ClipBank", "LabelledClip"),
    "etl.synthetic.line": ("telephone_line",),
    "etl.synthetic.nonspeech": ("babble", "dtmf_sequence", "hold_music", "ringback_tone"),
    "etl.synthetic.timeline": (
        "NONSPEECH_KINDS", "customer_negative_share", "read_timeline", "speech_events",
        "TimelineEvent", "truly_escalated", "write_timeline",
    ),
    "etl.synthetic.corpora": ("write_tiny_wavs",),
    "etl.synthetic.demo": (
        "DEMO_QUERIES", "DEMOGRAPHICS_FILE", "DemoCorpusConfig", "write_cremad_corpus",
    ),
    "etl.synthetic.speech": ("hash_seed",),
})
__all__ = _EXPORTS.names  # noqa: PLE0605 - the names above, listed once
__getattr__ = _EXPORTS.resolve
