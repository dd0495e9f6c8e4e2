"""Write ``voice_reference.npz``: resemblyzer's own (torch) embeddings of a few synthetic signals.

Run ONCE, by hand, in a throw-away environment with torch and ``resemblyzer==0.1.4``::

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install resemblyzer==0.1.4 librosa
    cd /work/main && /tmp/torchenv/bin/python tests/data/make_voice_reference.py

The tests never run it (the project does not depend on torch); they import `reference_signals`
(numpy only) to regenerate the signals and compare `etl.features.voice` with the stored
embeddings. The reference is resemblyzer end to end with our two choices passed as its own
parameters: the level, ``normalize_volume(wav, -30)`` in both directions, and the partial step,
``embed_utterance(rate=1.25)`` (16000 / 160 / 1.25 = 80 frames), ``min_coverage=0.75``.
resemblyzer's VAD trimming (``preprocess_wav``) is not applied, as in our port.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RATE = 16000
TARGET_DBFS = -30.0
PARTIAL_STEP_FRAMES = 80
MIN_COVERAGE = 0.75
OUT = Path(__file__).with_name("voice_reference.npz")


def _vowel(*, duration_s: float, f0: float, formants: tuple[float, ...], vibrato_hz: float,
           glide: float, amplitude: float) -> np.ndarray:
    """Harmonics of a vibrato (and glide) f0 weighted by formant resonances."""
    t = np.arange(int(duration_s * RATE)) / RATE
    f0_t = f0 * (1 + glide * t / duration_s) * (1 + 0.03 * np.sin(2 * np.pi * vibrato_hz * t))
    phase = 2 * np.pi * np.cumsum(f0_t) / RATE
    out = np.zeros_like(t)
    for k in range(1, 40):
        fk = k * f0
        if fk > RATE / 2 - 500:
            break
        gain = sum(1.0 / (1 + ((fk - f) / 90.0) ** 2) for f in formants) / k ** 0.5
        out += gain * np.sin(k * phase)
    return amplitude * out / np.max(np.abs(out))


def reference_signals() -> dict[str, np.ndarray]:
    """Four deterministic float32 signals at 16 kHz, keyed by name.

    ``vowel_a`` 2.5 s soft (level raised), ``vowel_i`` 1.2 s loud (shorter than one partial,
    level lowered), ``noise_bursts`` 3.3 s, ``glide_syllables`` 5.0 s (several partials).
    """
    rng = np.random.default_rng(20240)
    vowel_a = _vowel(duration_s=2.5, f0=120, formants=(700, 1200, 2500), vibrato_hz=5.0,
                     glide=0.0, amplitude=0.02)
    vowel_i = _vowel(duration_s=1.2, f0=220, formants=(300, 2300, 3000), vibrato_hz=6.0,
                     glide=0.0, amplitude=0.9)
    n = int(3.3 * RATE)
    gate = ((np.arange(n) / RATE) % 0.25) < 0.1  # 100 ms on, 150 ms off
    noise = rng.standard_normal(n)
    noise = np.convolve(noise, np.hanning(9) / 4.5, mode="same") * gate * 0.1
    glide = _vowel(duration_s=5.0, f0=100, formants=(500, 1500, 2600), vibrato_hz=4.5,
                   glide=0.8, amplitude=0.3)
    t = np.arange(glide.size) / RATE
    glide = glide * (0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t))  # syllable-rate envelope
    glide = glide + 0.003 * rng.standard_normal(glide.size)
    return {name: sig.astype(np.float32) for name, sig in [
        ("vowel_a", vowel_a), ("vowel_i", vowel_i), ("noise_bursts", noise),
        ("glide_syllables", glide)]}


def main() -> None:
    import sys
    import types
    from importlib.metadata import version

    # resemblyzer.audio imports webrtcvad for preprocess_wav's trimming, which is not used here
    sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume

    encoder = VoiceEncoder(device="cpu", verbose=False)
    rate = RATE / 160 / PARTIAL_STEP_FRAMES  # partials per second
    signals = reference_signals()
    embeddings = np.stack([
        encoder.embed_utterance(normalize_volume(sig, TARGET_DBFS), rate=rate,
                                min_coverage=MIN_COVERAGE)
        for sig in signals.values()]).astype(np.float32)
    np.savez_compressed(OUT, names=np.array(list(signals)), embeddings=embeddings,
                        partial_step_frames=PARTIAL_STEP_FRAMES, target_dbfs=TARGET_DBFS,
                        min_coverage=MIN_COVERAGE, resemblyzer=version("resemblyzer"),
                        torch=version("torch"))
    print(f"wrote {OUT}: {embeddings.shape}")


if __name__ == "__main__":
    main()
