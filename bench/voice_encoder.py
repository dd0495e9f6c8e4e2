"""CPU cost of the numpy voice encoder (etl.features.voice), one BLAS thread. Prints JSON.

- ``per_partial_ms``: process CPU per 160-frame partial through the network alone
  (`VoiceEncoder.embed_partials`) at batch sizes 1/16/64/256 (``MAX_BATCH`` raised to the
  batch size for the run; the module runs 64 at a time); ``plain_per_partial_ms``: the same
  network written plainly (`_plain_forward`), what the module's gate layout and in-place
  updates are measured against;
- ``ms_per_speech_s``: process CPU per second of speech of `embed_segments` (level scaling,
  mel spectrogram, partials, network) on 120 s of signal cut into segments of 1-4 s, at
  partial steps of 80 and 160 frames (``PARTIAL_STEP_FRAMES``, patched for the run), with the
  partials per second that step gives; ``mel_ms_per_speech_s`` is the mel spectrograms alone;
- ``load_ms``: `load_encoder` (sha256 check + unpickling) in this process;
- ``max_abs_diff_vs_torch``: partial embeddings of the same mel partials against resemblyzer's
  torch model, run by ``--torch-python`` (an interpreter with torch and resemblyzer 0.1.4,
  e.g. /tmp/torchenv/bin/python); null without it.

Each figure is the best of ``--repeat`` runs (the VM is shared; the best is the least
disturbed). Usage: python bench/voice_encoder.py [--repeat 3] [--torch-python PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import etl.features.voice.encoder as voice_encoder
import etl.features.voice.frontend as voice_frontend
import etl.features.voice.params as voice_params
import etl.features.voice.weights as voice_weights

SIGNAL_S = 120
TORCH_SCRIPT = """
import sys, types
sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))  # only preprocess_wav uses it
import numpy as np, torch
from resemblyzer import VoiceEncoder
mels = np.load(sys.argv[1])
with torch.no_grad():
    out = VoiceEncoder(device="cpu", verbose=False)(torch.from_numpy(mels)).numpy()
np.save(sys.argv[2], out)
"""


def _best_cpu_s(fn: Callable[[], object], *, repeat: int) -> float:
    fn()  # warm: first-call allocations and imports
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _signal(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal(int(seconds * voice_params.ENCODER_RATE))).astype(np.float32)


def per_partial(encoder: voice_encoder.VoiceEncoder, *, repeat: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    out = {}
    default = voice_encoder.MAX_BATCH
    try:
        for batch in (1, 16, 64, 256):
            voice_encoder.MAX_BATCH = batch
            mels = rng.random((batch, voice_params.PARTIAL_FRAMES, voice_params.N_MELS),
                              dtype=np.float32)
            seconds = _best_cpu_s(lambda m=mels: encoder.embed_partials(m), repeat=repeat)
            out[str(batch)] = round(1000 * seconds / batch, 2)
    finally:
        voice_encoder.MAX_BATCH = default
    return out


def _plain_forward(state: dict[str, np.ndarray], mels: np.ndarray) -> np.ndarray:
    """The network written plainly in float32: gates in torch order, exp sigmoids, new arrays.

    The input projection is one product for all steps, as in the module (it is what makes
    the batch pay); only the gate arithmetic differs.
    """
    def sigmoid(v: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-v))

    h_dim = voice_encoder.HIDDEN
    x = mels.transpose(1, 0, 2)
    for layer in range(voice_encoder.N_LAYERS):
        w_hh = state[f"lstm.weight_hh_l{layer}"]
        n_steps, batch, n_in = x.shape
        proj = (x.reshape(-1, n_in) @ state[f"lstm.weight_ih_l{layer}"].T
                + state[f"lstm.bias_ih_l{layer}"] + state[f"lstm.bias_hh_l{layer}"]
                ).reshape(n_steps, batch, -1)
        h = c = np.zeros((batch, h_dim), np.float32)
        steps = []
        for t in range(n_steps):
            g = proj[t] + h @ w_hh.T
            c = sigmoid(g[:, h_dim:2 * h_dim]) * c + sigmoid(g[:, :h_dim]) * np.tanh(
                g[:, 2 * h_dim:3 * h_dim])
            h = sigmoid(g[:, 3 * h_dim:]) * np.tanh(c)
            steps.append(h)
        x = np.stack(steps)
    emb = np.maximum(h @ state["linear.weight"].T + state["linear.bias"], 0)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def per_partial_plain(path: Path, *, repeat: int) -> dict[str, float]:
    """`per_partial` of `_plain_forward`: what the module's fused, in-place gates save."""
    state = voice_weights.read_state_dict(path.read_bytes())
    rng = np.random.default_rng(1)
    out = {}
    with np.errstate(over="ignore"):  # exp(-v) overflows to inf for v << 0: sigmoid 0, right
        for batch in (16, 64):
            mels = rng.random((batch, voice_params.PARTIAL_FRAMES, voice_params.N_MELS),
                              dtype=np.float32)
            seconds = _best_cpu_s(lambda m=mels: _plain_forward(state, m), repeat=repeat)
            out[str(batch)] = round(1000 * seconds / batch, 2)
    return out


def per_speech_second(encoder: voice_encoder.VoiceEncoder, *, repeat: int
                      ) -> dict[str, dict[str, float]]:
    y = _signal(SIGNAL_S)
    out: dict[str, dict[str, float]] = {}
    default = voice_params.PARTIAL_STEP_FRAMES
    try:
        for step in (80, 160):
            voice_params.PARTIAL_STEP_FRAMES = step
            for seg_s in (1, 2, 3, 4):
                segments = [(t, t + seg_s) for t in np.arange(0, SIGNAL_S, seg_s, dtype=float)]
                partials = sum(voice_frontend.partial_starts(seg_s * voice_params.ENCODER_RATE,
                                                    step_frames=step).size for _ in segments)
                total = _best_cpu_s(lambda s=segments: encoder.embed_segments(y, s), repeat=repeat)
                mel = _best_cpu_s(lambda s=segments, r=voice_params.ENCODER_RATE: [
                    voice_frontend.mel_spectrogram(y[int(a * r):int(b * r)]) for a, b in s],
                    repeat=repeat)
                out[f"step{step}_seg{seg_s}s"] = {
                    "ms_per_speech_s": round(1000 * total / SIGNAL_S, 2),
                    "mel_ms_per_speech_s": round(1000 * mel / SIGNAL_S, 2),
                    "partials_per_speech_s": round(partials / SIGNAL_S, 3)}
    finally:
        voice_params.PARTIAL_STEP_FRAMES = default
    return out


def torch_difference(encoder: voice_encoder.VoiceEncoder, torch_python: str) -> float:
    y = _signal(8.0)
    level = 10 ** (voice_params.LEVEL_TARGET_DBFS / 20)
    mel = voice_frontend.mel_spectrogram(y / np.sqrt(np.mean(y ** 2)) * level)
    mels = np.stack([mel[s:s + voice_params.PARTIAL_FRAMES]
                     for s in range(0, mel.shape[0] - voice_params.PARTIAL_FRAMES, 40)])
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "mels.npy", Path(tmp) / "out.npy"
        np.save(src, mels)
        subprocess.run([torch_python, "-c", TORCH_SCRIPT, str(src), str(dst)], check=True)
        reference = np.load(dst)
    return float(np.abs(encoder.embed_partials(mels) - reference).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--torch-python", default=None,
                        help="Interpreter with torch and resemblyzer 0.1.4 (for the accuracy row).")
    args = parser.parse_args()
    path = voice_weights.install_weights()
    start = time.perf_counter()
    encoder = voice_weights.load_encoder(path)
    load_ms = 1000 * (time.perf_counter() - start)
    with threadpool_limits(1):
        result = {
            "encoder": voice_params.encoder_params()["name"],
            "max_batch": voice_encoder.MAX_BATCH,
            "load_ms": round(load_ms, 1),
            "weights_mb": round(encoder.nbytes / 2**20, 1),
            "per_partial_ms": per_partial(encoder, repeat=args.repeat),
            "plain_per_partial_ms": per_partial_plain(path, repeat=args.repeat),
            "segments": per_speech_second(encoder, repeat=args.repeat),
            "max_abs_diff_vs_torch": (torch_difference(encoder, args.torch_python)
                                      if args.torch_python else None),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
