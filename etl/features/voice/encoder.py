"""The voice encoder's network: resemblyzer's GE2E LSTM in float32 numpy, batched.

Network
    ``LSTM(40 -> 256, 3 layers)`` (PyTorch gate order i, f, g, o; ``bias_ih + bias_hh``),
    ``Linear(256, 256)`` and ReLU on the last layer's final hidden state, L2-normalised, over
    mel partials from `etl.features.voice.frontend`; the utterance embedding is the
    L2-normalised mean of the partial embeddings. float32 throughout; partials of all segments
    run together, `MAX_BATCH` at a time (a batch of one costs twice as much CPU per partial:
    embed a call's segments in one call). The weights come from `etl.features.voice.weights`
    (`load_encoder`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from etl.features.voice.frontend import level_scaled, segment_partials
from etl.features.voice.params import (
    EMBEDDING_DIM,
    ENCODER_RATE,
    MAX_PARTIALS,
    MIN_COVERAGE,
    N_MELS,
    PAD_SHORT,
    PARTIAL_STEP_FRAMES,
)

HIDDEN = 256
N_LAYERS = 3
# Partials per forward pass: bounds the memory of the input projections (~0.8 MB a partial)
# while keeping the recurrent products large enough for BLAS (bench/voice_encoder.py).
MAX_BATCH = 64


class VoiceEncoder:
    """resemblyzer's GE2E encoder as float32 numpy arrays (built by `load_encoder` of
    `etl.features.voice.weights`).

    Parameters
    ----------
    state : the state dict from `etl.features.voice.weights.read_state_dict` (torch names and
        shapes).

    Notes
    -----
    Holds ~5 MB of weights. Layouts are prepared once for the forward pass: gates reordered to
    (i, f, o, g) so the three sigmoid gates are one block, and their rows scaled by 0.5 (exact
    in floating point) so a single ``tanh`` over all gates gives
    ``sigmoid(x) = 0.5 tanh(x / 2) + 0.5`` for them.
    """

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        h = HIDDEN
        # torch rows are (i, f, g, o); ours (i, f, o, g)
        order = np.r_[0:2 * h, 3 * h:4 * h, 2 * h:3 * h]
        scale = np.ones(4 * h, dtype=np.float32)
        scale[:3 * h] = 0.5
        self._w_ih_t: list[np.ndarray] = []
        self._w_hh_t: list[np.ndarray] = []
        self._bias: list[np.ndarray] = []
        for layer in range(N_LAYERS):
            w_ih = np.asarray(state[f"lstm.weight_ih_l{layer}"], dtype=np.float32)[order]
            w_hh = np.asarray(state[f"lstm.weight_hh_l{layer}"], dtype=np.float32)[order]
            bias = (np.asarray(state[f"lstm.bias_ih_l{layer}"], dtype=np.float32)
                    + np.asarray(state[f"lstm.bias_hh_l{layer}"], dtype=np.float32))[order]
            self._w_ih_t.append(np.ascontiguousarray((w_ih * scale[:, None]).T))
            self._w_hh_t.append(np.ascontiguousarray((w_hh * scale[:, None]).T))
            self._bias.append(bias * scale)
        self._w_lin_t = np.ascontiguousarray(np.asarray(state["linear.weight"], np.float32).T)
        self._b_lin = np.asarray(state["linear.bias"], dtype=np.float32).copy()

    @property
    def nbytes(self) -> int:
        """Bytes held by the weights."""
        arrays = [*self._w_ih_t, *self._w_hh_t, *self._bias, self._w_lin_t, self._b_lin]
        return sum(a.nbytes for a in arrays)

    def _lstm_layer(self, x: np.ndarray, layer: int, *, keep_sequence: bool,
                    lengths: np.ndarray | None = None) -> np.ndarray:
        """One LSTM layer over time-major ``x`` ``(T, B, n_in)``.

        Returns the hidden states ``(T, B, 256)`` if ``keep_sequence``, else the last
        ``(B, 256)``: row ``b``'s state after ``lengths[b]`` steps (default ``T``; the layers
        are causal, so frames after a row's length change nothing before it).
        """
        n_steps, batch, n_in = x.shape
        h = HIDDEN
        w_hh_t = self._w_hh_t[layer]
        # the input's share of the gates for every step in one product
        proj = (x.reshape(n_steps * batch, n_in) @ self._w_ih_t[layer]).reshape(
            n_steps, batch, 4 * h)
        proj += self._bias[layer]
        out = np.empty((n_steps, batch, h), dtype=np.float32) if keep_sequence else None
        last = np.zeros((batch, h), dtype=np.float32)
        ends = (np.full(batch, n_steps) if lengths is None else np.asarray(lengths)) - 1
        state_h = np.zeros((batch, h), dtype=np.float32)
        state_c = np.zeros((batch, h), dtype=np.float32)
        tmp = np.empty((batch, h), dtype=np.float32)
        for t in range(n_steps):
            gates = proj[t]
            if t:  # h is zero at t == 0
                gates += state_h @ w_hh_t
            np.tanh(gates, out=gates)
            sig = gates[:, :3 * h]
            sig *= 0.5
            sig += 0.5
            state_c *= gates[:, h:2 * h]  # f
            np.multiply(gates[:, :h], gates[:, 3 * h:], out=tmp)  # i * g
            state_c += tmp
            np.tanh(state_c, out=tmp)
            if out is not None:
                state_h = out[t]
            np.multiply(gates[:, 2 * h:3 * h], tmp, out=state_h)  # o * tanh(c)
            if out is None:
                done = ends == t
                if done.any():
                    last[done] = state_h[done]
        return out if out is not None else last

    def embed_partials(self, mels: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """Partial embeddings of mel partials (the torch model's ``forward``).

        Parameters
        ----------
        mels : float32 ``(B, 160, 40)``, power mel spectrogram partials.
        lengths : int ``(B,)`` frames of each partial that are signal (default all 160): the
            network's state after them is the embedding's.

        Returns
        -------
        np.ndarray
            float32 ``(B, 256)``, L2-normalised, non-negative; a row whose ReLU output is all
            zero stays zero. Runs `MAX_BATCH` partials at a time.
        """
        mels = np.asarray(mels, dtype=np.float32)
        if mels.ndim != 3 or mels.shape[2] != N_MELS:
            raise ValueError(f"mels must be (B, frames, {N_MELS}), got {mels.shape}")
        n = mels.shape[0]
        lengths = np.full(n, mels.shape[1]) if lengths is None else np.asarray(lengths)
        # shortest first: each batch runs only as many steps as its longest partial
        order = np.argsort(lengths, kind="stable")
        out = np.empty((n, EMBEDDING_DIM), dtype=np.float32)
        for lo in range(0, n, MAX_BATCH):
            rows = order[lo:lo + MAX_BATCH]
            steps = int(lengths[rows].max())
            # time-major: each step's gates are one contiguous (B, 1024) block
            x = np.ascontiguousarray(mels[rows, :steps].transpose(1, 0, 2))
            for layer in range(N_LAYERS - 1):
                x = self._lstm_layer(x, layer, keep_sequence=True)
            last = self._lstm_layer(x, N_LAYERS - 1, keep_sequence=False, lengths=lengths[rows])
            emb = last @ self._w_lin_t
            emb += self._b_lin
            np.maximum(emb, 0.0, out=emb)
            out[rows] = emb
        return _l2_normalised(out)

    def embed_segments(self, y: np.ndarray, segments: Sequence[tuple[float, float]], *,
                       step_frames: int = PARTIAL_STEP_FRAMES,
                       min_coverage: float = MIN_COVERAGE,
                       max_partials: int | None = MAX_PARTIALS,
                       pad_short: bool = PAD_SHORT) -> np.ndarray:
        """Utterance embeddings of segments of one signal, in one batched pass.

        Each segment is scaled to `LEVEL_TARGET_DBFS` RMS (both directions), its mel spectrogram
        cut into partials (`partial_starts`; a segment shorter than one partial is zero-padded
        to one), and its embedding is the L2-normalised mean of its partial embeddings. The
        partials of all segments go through the network together.

        Parameters
        ----------
        y : mono float ``(n_samples,)`` at `ENCODER_RATE`.
        segments : ``(start_s, end_s)`` pairs in seconds from the start of ``y``; clipped to
            the signal.
        step_frames, min_coverage, max_partials, pad_short : how a segment is cut into
            partials (`partial_starts`; ``pad_short``: a segment under 1.6 s is zero-padded to
            one partial, as resemblyzer does, rather than run on its own frames); a feature set
            stores the values it was computed with.

        Returns
        -------
        np.ndarray
            float32 ``(len(segments), 256)``. A segment with no samples, only zeros or a
            non-finite sample gives a zero row (not a unit vector: downstream can tell it
            apart).

        Raises
        ------
        ValueError
            ``y`` is not 1-D, or a segment ends before it starts.
        """
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be mono (n_samples,), got shape {y.shape}")
        result = np.zeros((len(segments), EMBEDDING_DIM), dtype=np.float32)
        owners: list[np.ndarray] = []
        partials: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        for row, (start_s, end_s) in enumerate(segments):
            if end_s < start_s:
                raise ValueError(f"segment {row} ends ({end_s} s) before it starts ({start_s} s)")
            lo = min(max(round(float(start_s) * ENCODER_RATE), 0), y.size)
            hi = min(max(round(float(end_s) * ENCODER_RATE), lo), y.size)
            scaled = level_scaled(y[lo:hi])
            if scaled is None:
                continue
            mels, frames = segment_partials(scaled, step_frames=step_frames,
                                            min_coverage=min_coverage,
                                            max_partials=max_partials, pad_short=pad_short)
            partials.append(mels)
            lengths.append(frames)
            owners.append(np.full(mels.shape[0], row, dtype=np.intp))
        if not partials:
            return result
        owner = np.concatenate(owners)
        embeds = self.embed_partials(np.concatenate(partials), np.concatenate(lengths))
        np.add.at(result, owner, embeds)
        return _l2_normalised(result)

    def embed(self, y: np.ndarray, *, max_partials: int | None = MAX_PARTIALS,
              pad_short: bool = PAD_SHORT) -> np.ndarray:
        """Utterance embedding of the whole signal: float32 ``(256,)`` (zero if silent).

        ``embed_segments(y, [(0, len(y) / ENCODER_RATE)], ...)[0]``; ``max_partials=None,
        pad_short=True`` is resemblyzer's ``embed_utterance``.
        """
        y = np.asarray(y)
        return self.embed_segments(y, [(0.0, y.size / ENCODER_RATE)],
                                   max_partials=max_partials, pad_short=pad_short)[0]


def _l2_normalised(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in place; all-zero rows stay zero."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    np.divide(rows, norms, out=rows, where=norms > 0)
    return rows
