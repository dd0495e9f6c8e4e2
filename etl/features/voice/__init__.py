"""A pretrained voice encoder in numpy: resemblyzer's GE2E speaker encoder without torch.

Why our own port
    ``resemblyzer`` 0.1.4 ships a pretrained GE2E encoder (``resemblyzer/pretrained.pt``) but
    requires torch, which is 2.9 GB from the registry for three LSTM layers and a linear layer.
    This package reads the same weights (the legacy torch serialization, with a restricted
    unpickler that never imports torch) and runs the same network in float32 numpy; its
    embeddings match resemblyzer's torch model to ~1e-6 (tests/test_voice_encoder.py checks
    reference embeddings computed once with torch).

Modules
    ``params``
        what the encoder is (package, weights sha256, mel, partials, level) and the params a
        feature set pins (`encoder_params`, `check_params`); light, no numpy work.
    ``weights``
        the weights file: installing it from the resemblyzer wheel, checking it, reading it
        without torch, and the loaded encoder (`load_encoder`).
    ``frontend``
        a segment's level, its mel spectrogram and its partials (the network's input).
    ``encoder``
        the network (`VoiceEncoder`): partial and utterance embeddings, batched.

Nothing is imported here: callers import each name from its module (or the public ones from
`etl.features`), so the light ``params`` stays light.
"""
