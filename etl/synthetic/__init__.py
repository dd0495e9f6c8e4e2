"""Synthetic data: deterministic emotional speech, generated stereo calls, the demo corpus, small
corpus fixtures and database history for tests, the demo and the benchmarks.

``__all__`` lists the names callers outside ``etl.synthetic`` use; each is imported from its
module on first use (``etl.public``).
"""

from etl.public import Exports

_EXPORTS = Exports(__name__, {
    "etl.synthetic.calls": (
        "NONSPEECH_KINDS", "ROLES", "SCENARIO_WEIGHTS", "SCENARIOS", "bank_from_source",
        "CallGenConfig", "ClipBank", "compose_call", "customer_negative_share", "generate_calls",
        "GeneratedCall", "LabelledClip", "read_timeline", "speech_events", "telephone_line",
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
