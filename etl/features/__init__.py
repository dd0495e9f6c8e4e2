"""Features: named, versioned feature specs (``specs``), their extraction from audio
(``extraction``, on signals made ready by ``preparation``, with the kernels ``rich`` and ``seed``
and the voice columns of ``embedding`` from the voice encoder ``voice``), and their storage per
clip (``store``).

``__all__`` lists the names callers outside ``etl.features`` use; each is imported from its
module on first use (``etl.public``), so importing ``specs`` stays light.
"""

from etl.public import Exports

_EXPORTS = Exports(__name__, {
    "etl.features.extraction": (
        "extract", "extract_files", "extract_segments", "require_extractable",
    ),
    "etl.features.preparation": ("channel_level", "FeatureExtractionError"),
    "etl.features.seed": ("seed_vector",),
    "etl.features.specs": (
        "DEFAULT_SET", "LEVEL_NORM", "VOICE_SET", "augmented_set_name", "ClipResult",
        "feature_spec", "FeatureSpec", "has_phone_copies", "split_set_name", "voice_columns",
    ),
    "etl.features.store": (
        "clear_errors", "count_pending", "ensure_feature_set", "load_feature_matrix",
        "load_variant_matrix", "pending_clips", "store_results",
    ),
    "etl.features.voice.params": ("WEIGHTS_SHA256", "encoder_params", "VoiceEncoderError"),
    "etl.features.voice.weights": ("install_weights", "license_path", "weights_status"),
})
__all__ = _EXPORTS.names  # noqa: PLE0605 - the names above, listed once
__getattr__ = _EXPORTS.resolve
