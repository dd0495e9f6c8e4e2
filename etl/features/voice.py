"""A pretrained voice encoder in numpy: resemblyzer's GE2E speaker encoder without torch.

Why our own port
    ``resemblyzer`` 0.1.4 ships a pretrained GE2E encoder (``resemblyzer/pretrained.pt``) but
    requires torch, which is 2.9 GB from the registry for three LSTM layers and a linear layer.
    This module reads the same weights (the legacy torch serialization, with a restricted
    unpickler that never imports torch) and runs the same network in float32 numpy; its
    embeddings match resemblyzer's torch model to ~1e-6 (tests/test_voice_encoder.py checks
    reference embeddings computed once with torch).

Weights
    Installed from PyPI by `install_weights` (``ser encoder install``): pip downloads the
    resemblyzer wheel without its dependencies (no torch), the ``pretrained.pt`` inside is
    checked against `WEIGHTS_SHA256` and written to `weights_path` inside the virtualenv,
    shared by every SER_HOME. Resemblyzer (Corentin Jemine, Resemble AI) is Apache-2.0; its
    LICENSE is installed beside the weights, as the licence requires.

Network
    ``LSTM(40 -> 256, 3 layers)`` (PyTorch gate order i, f, g, o; ``bias_ih + bias_hh``),
    ``Linear(256, 256)`` and ReLU on the last layer's final hidden state, L2-normalised. Input:
    the power (not log) mel spectrogram ``librosa.feature.melspectrogram(sr=16000, n_fft=400,
    hop_length=160, n_mels=40)``, ``(frames, 40)`` (computed by the project's numpy ports in
    `etl.audio`, equal to librosa's), cut into partials of 160 frames (1.6 s) every
    `PARTIAL_STEP_FRAMES`; the utterance embedding is the L2-normalised mean of the partial
    embeddings. float32 throughout; partials of all segments run together, `MAX_BATCH` at a
    time (a batch of one costs twice as much CPU per partial: embed a call's segments in one
    call).

Differences from resemblyzer's ``embed_utterance``
    No VAD trimming (segments come from our own VAD); each segment is scaled to
    `LEVEL_TARGET_DBFS` RMS in both directions (resemblyzer only raises the level), so a soft
    and a loud talker give the encoder the same input level; the partial step is a number of
    frames (resemblyzer: a rate in partials per second, 1.3 by default, i.e. 77 frames).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENCODER_RATE = 16000
EMBEDDING_DIM = 256
ENCODER_NAME = "resemblyzer-ge2e"
PACKAGE = "resemblyzer"
PACKAGE_VERSION = "0.1.4"
WEIGHTS_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
# Members of the wheel ``Resemblyzer-0.1.4-py3-none-any.whl``.
WEIGHTS_MEMBER = "resemblyzer/pretrained.pt"
LICENSE_MEMBER = f"Resemblyzer-{PACKAGE_VERSION}.dist-info/LICENSE"

N_FFT = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s, what the encoder was trained on
PARTIAL_STEP_FRAMES = 80
# The last partial is kept (zero-padded) when at least this share of it is signal.
MIN_COVERAGE = 0.75
# At most this many partials per segment, spread evenly over it (None = every one): the network
# costs the same per partial whatever the segment, and nightly scoring has a budget per call.
MAX_PARTIALS: int | None = 1
# resemblyzer zero-pads a segment shorter than a partial; calls have many 0.5-1.6 s segments,
# and a second of silence after them moves the network's state away from the speech's.
PAD_SHORT = False
LEVEL_TARGET_DBFS = -30.0  # resemblyzer's audio_norm_target_dBFS
HIDDEN = 256
N_LAYERS = 3
# Partials per forward pass: bounds the memory of the input projections (~0.8 MB a partial)
# while keeping the recurrent products large enough for BLAS (bench/voice_encoder.py).
MAX_BATCH = 64

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL = 1001
_PIP_TIMEOUT_S = 600
_PIP_TAIL_LINES = 8


class VoiceEncoderError(RuntimeError):
    """The encoder's weights are missing, altered, or could not be installed."""


def encoder_params() -> dict[str, Any]:
    """JSON-ready description of the encoder, stored in a feature set's params.

    Reads no weights (the light process that registers feature sets calls it); the weights are
    pinned by their sha256.

    Returns
    -------
    dict
        ``name``, ``package``, ``package_version``, ``weights_sha256``, ``sample_rate``,
        ``mel`` (librosa melspectrogram parameters), ``partial_frames``,
        ``partial_step_frames``, ``min_coverage``, ``level_norm`` and ``embedding_dim``.
    """
    return {
        "name": ENCODER_NAME,
        "package": PACKAGE,
        "package_version": PACKAGE_VERSION,
        "weights_sha256": WEIGHTS_SHA256,
        "sample_rate": ENCODER_RATE,
        "mel": {"n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": N_MELS, "power": 2.0,
                "log": False},
        "partial_frames": PARTIAL_FRAMES,
        "partial_step_frames": PARTIAL_STEP_FRAMES,
        "min_coverage": MIN_COVERAGE,
        "max_partials": MAX_PARTIALS,
        "pad_short": PAD_SHORT,
        "level_norm": {"method": "segment_rms_dbfs", "target_dbfs": LEVEL_TARGET_DBFS,
                       "direction": "both"},
        "embedding_dim": EMBEDDING_DIM,
    }


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse a feature set's ``params["voice"]`` that this code cannot reproduce.

    Raises
    ------
    VoiceEncoderError
        Another encoder, other weights, or other mel or level settings than this code's (a
        model trained on them cannot be scored here: features would differ).
    """
    current = encoder_params()
    fixed = ("name", "weights_sha256", "sample_rate", "mel", "level_norm", "embedding_dim",
             "partial_frames")
    changed = [key for key in fixed if params.get(key) != current[key]]
    if changed:
        raise VoiceEncoderError(
            f"this feature set was computed with a voice encoder whose {', '.join(changed)} "
            f"differ from this installation's ({ENCODER_NAME} {PACKAGE_VERSION}, sha256 "
            f"{WEIGHTS_SHA256[:12]}...): install the ser-analytics version that trained it, or "
            f"train a new model (`ser train`)")


def weights_path() -> Path:
    """Where `install_weights` puts the weights by default: inside the virtualenv.

    Returns
    -------
    Path
        ``<sys.prefix>/share/ser-analytics/resemblyzer-ge2e-0.1.4.pt``.
    """
    return Path(sys.prefix) / "share" / "ser-analytics" / f"{ENCODER_NAME}-{PACKAGE_VERSION}.pt"


def license_path(weights: Path) -> Path:
    """The resemblyzer LICENSE installed beside ``weights`` (``<stem>.LICENSE``)."""
    return weights.with_suffix(".LICENSE")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class WeightsStatus:
    """What `weights_status` found at ``path``: ``sha256`` is None when the file is absent."""

    path: Path
    present: bool
    sha256: str | None

    @property
    def ok(self) -> bool:
        """The file is present and is the pinned resemblyzer 0.1.4 ``pretrained.pt``."""
        return self.sha256 == WEIGHTS_SHA256


def weights_status(*, path: Path | None = None) -> WeightsStatus:
    """Whether the weights at ``path`` (default `weights_path`) are present and intact."""
    path = weights_path() if path is None else path
    if not path.is_file():
        return WeightsStatus(path, False, None)
    return WeightsStatus(path, True, _file_sha256(path))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory: readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; every user of the venv reads it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pip_download(directory: str) -> Path:
    """Download the resemblyzer wheel alone (``--no-deps``: no torch) into ``directory``."""
    cmd = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={PACKAGE_VERSION}", "--no-deps",
           "--only-binary=:all:", "-d", directory]
    manual = (f"check the network and the package index pip uses (pip config list), or copy "
              f"resemblyzer/pretrained.pt out of the {PACKAGE}-{PACKAGE_VERSION} wheel to "
              f"{weights_path()} by hand (sha256 {WEIGHTS_SHA256})")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise VoiceEncoderError(f"pip download {PACKAGE}=={PACKAGE_VERSION} did not finish in "
                                f"{_PIP_TIMEOUT_S} s; {manual}") from None
    wheels = sorted(Path(directory).glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [line for line in (proc.stdout + proc.stderr).splitlines()
                 if line.strip() and "is ignored" not in line]
        tail = "\n  ".join(lines[-_PIP_TAIL_LINES:]) or "(no output)"
        raise VoiceEncoderError(f"pip could not download {PACKAGE}=={PACKAGE_VERSION} (exit code "
                                f"{proc.returncode}):\n  {tail}\n{manual}")
    return wheels[0]


def install_weights(*, dest: Path | None = None, force: bool = False,
                    progress: Callable[[str], None] | None = None) -> Path:
    """Install the encoder's weights from the registry (the resemblyzer wheel, without torch).

    Parameters
    ----------
    dest : where to write the weights; default `weights_path` (inside the virtualenv).
        The resemblyzer LICENSE goes beside it (`license_path`).
    force : download and write again even if ``dest`` holds the right file.
    progress : called with a line of text before each slow step.

    Returns
    -------
    Path
        ``dest``, holding the file whose sha256 is `WEIGHTS_SHA256`.

    Raises
    ------
    VoiceEncoderError
        pip failed (the message quotes its last lines), the wheel lacks the weights or holds
        different ones, or ``dest`` cannot be written.
    """
    dest = weights_path() if dest is None else dest
    say = progress if progress is not None else (lambda _line: None)
    if not force and weights_status(path=dest).ok:
        return dest
    with tempfile.TemporaryDirectory(prefix="ser-encoder-") as tmp:
        say(f"downloading {PACKAGE}=={PACKAGE_VERSION} with pip (the wheel only, no torch)")
        wheel = _pip_download(tmp)
        try:
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(WEIGHTS_MEMBER)
                licence = zf.read(LICENSE_MEMBER)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise VoiceEncoderError(f"{wheel.name} from the package index is not the expected "
                                    f"resemblyzer wheel ({exc}); check which index pip uses "
                                    f"(pip config list)") from None
    digest = _sha256(data)
    if digest != WEIGHTS_SHA256:
        raise VoiceEncoderError(f"{WEIGHTS_MEMBER} in {wheel.name} has sha256 {digest}, not "
                                f"{WEIGHTS_SHA256}: the package index serves a different "
                                f"file; check which index pip uses (pip config list)")
    say(f"writing {dest}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(license_path(dest), licence)
        _write_atomic(dest, data)
    except OSError as exc:
        raise VoiceEncoderError(f"cannot write the encoder weights to {dest}: {exc}; run as the "
                                f"owner of the virtualenv {sys.prefix}") from None
    return dest


# ---- The legacy torch serialization, without torch -------------------------------------------
# torch.save (before 1.6) writes pickles one after another: a magic number, the protocol
# version, sys_info, the object (tensors as ``_rebuild_tensor_v2(storage, offset, size,
# stride, ...)`` with each storage as a persistent id), the list of storage keys, then per key
# an int64 element count and the raw little-endian elements.


class _FloatStorageType:
    """Stands for ``torch.FloatStorage`` in a persistent id."""


class _Storage:
    """A storage named by a persistent id; ``data`` is filled after the object pickle."""

    __slots__ = ("data", "key", "numel")

    def __init__(self, key: str, numel: int) -> None:
        self.key = key
        self.numel = numel
        self.data: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        """The tensor as a new C-contiguous float32 array, honouring offset, size and stride."""
        data = self.storage.data
        if data is None:
            raise pickle.UnpicklingError(f"storage {self.storage.key} has no data")
        if len(self.size) != len(self.stride) or min(self.size + self.stride, default=0) < 0:
            raise pickle.UnpicklingError(f"bad tensor geometry {self.size} / {self.stride}")
        if 0 in self.size:
            return np.zeros(self.size, dtype=np.float32)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or last >= data.size:
            raise pickle.UnpicklingError(f"tensor reaches past its storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride), writeable=False)
        # a copy: a view would keep the whole file alive, unaligned (BLAS slows down on it)
        return np.array(view, dtype=np.float32, order="C", copy=True)


def _rebuild_tensor_v2(storage: _Storage, storage_offset: int, size: tuple[int, ...],
                       stride: tuple[int, ...], requires_grad: bool = False,
                       backward_hooks: object = None, metadata: object = None) -> _TensorRef:
    """Local stand-in for ``torch._utils._rebuild_tensor_v2``: records where the tensor lies."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _TensorRef(storage, int(storage_offset), tuple(map(int, size)),
                      tuple(map(int, stride)))


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only the globals a float tensor state dict needs, mapped to local stand-ins.

    Any other global (``os.system``, ``builtins.eval``, ...) raises `pickle.UnpicklingError`
    before it is resolved, so nothing a crafted file names is imported or called.
    """

    _ALLOWED: Mapping[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch", "FloatStorage"): _FloatStorageType,
    }

    def __init__(self, file: io.BufferedIOBase | io.BytesIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in encoder "
                                         f"weights") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if storage_type is not _FloatStorageType or view_metadata is not None:
            raise pickle.UnpicklingError(f"unsupported storage {key!r}: float storages only")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(str(key), int(numel))
        return storage


def _read_legacy_torch(data: bytes) -> dict[str, Any]:
    """Parse a legacy torch file into its top-level dict, tensors as `_TensorRef`.

    Raises
    ------
    pickle.UnpicklingError, ValueError, EOFError, struct.error
        A global other than the allowed three, or a file that is not a well-formed legacy
        torch file of float tensors.
    """
    fh = io.BytesIO(data)
    if _RestrictedUnpickler(fh).load() != _TORCH_MAGIC:
        raise pickle.UnpicklingError("not a legacy torch file (magic number)")
    if _RestrictedUnpickler(fh).load() != _TORCH_LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("unsupported torch protocol version")
    sys_info = _RestrictedUnpickler(fh).load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
        raise pickle.UnpicklingError("not a little-endian torch file")
    unpickler = _RestrictedUnpickler(fh)
    obj = unpickler.load()
    keys = _RestrictedUnpickler(fh).load()
    if not (isinstance(obj, dict) and isinstance(keys, list)):
        raise pickle.UnpicklingError("unexpected layout")
    for key in keys:
        storage = unpickler.storages[key]
        (numel,) = struct.unpack("<q", fh.read(8))
        if numel != storage.numel:
            raise pickle.UnpicklingError(f"storage {key} holds {numel} elements, not "
                                         f"{storage.numel}")
        start = fh.tell()
        storage.data = np.frombuffer(data, dtype="<f4", count=numel, offset=start)
        fh.seek(start + 4 * numel)
    return obj


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(N_LAYERS):
        n_in = N_MELS if layer == 0 else HIDDEN
        shapes[f"lstm.weight_ih_l{layer}"] = (4 * HIDDEN, n_in)
        shapes[f"lstm.weight_hh_l{layer}"] = (4 * HIDDEN, HIDDEN)
        shapes[f"lstm.bias_ih_l{layer}"] = (4 * HIDDEN,)
        shapes[f"lstm.bias_hh_l{layer}"] = (4 * HIDDEN,)
    shapes["linear.weight"] = (EMBEDDING_DIM, HIDDEN)
    shapes["linear.bias"] = (EMBEDDING_DIM,)
    return shapes


def read_state_dict(data: bytes, *, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """The encoder's float32 weights from the bytes of resemblyzer's ``pretrained.pt``.

    Does not check the sha256 (`load_encoder` does, first); parses with a restricted unpickler
    that imports nothing.

    Parameters
    ----------
    data : the file's bytes.
    source : the file's name, for messages.

    Returns
    -------
    dict
        ``lstm.{weight_ih,weight_hh,bias_ih,bias_hh}_l{0,1,2}``, ``linear.weight``,
        ``linear.bias``: float32 arrays, e.g. ``weight_ih_l0`` ``(1024, 40)``.

    Raises
    ------
    VoiceEncoderError
        Not a legacy torch file of float tensors with those weights and shapes, or it names
        a global other than a tensor state dict needs.
    """
    fix = "run `ser encoder install --force` to install it again"
    try:
        obj = _read_legacy_torch(data)
        state = obj["model_state"]
        shapes = _expected_shapes()
        weights = {name: state[name].to_numpy() for name in shapes}
    except (pickle.UnpicklingError, ValueError, EOFError, struct.error, KeyError, TypeError,
            AttributeError, IndexError) as exc:
        raise VoiceEncoderError(f"encoder weights {source} cannot be read ({exc}); {fix}") from None
    for name, shape in shapes.items():
        if weights[name].shape != shape:
            raise VoiceEncoderError(f"encoder weights {source}: {name} has shape "
                                    f"{weights[name].shape}, not {shape}; {fix}")
    return weights


def load_encoder(path: Path | None = None) -> VoiceEncoder:
    """The pretrained encoder, loaded once per process and path.

    Parameters
    ----------
    path : the weights; default `weights_path`.

    Raises
    ------
    VoiceEncoderError
        The file is missing, or its sha256 is not `WEIGHTS_SHA256` (checked before parsing);
        the message says to run ``ser encoder install``.
    """
    return _load_encoder_cached((weights_path() if path is None else path).resolve())


@functools.lru_cache(maxsize=4)
def _load_encoder_cached(path: Path) -> VoiceEncoder:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VoiceEncoderError(f"the voice encoder's weights {path} are not installed; run "
                                f"`ser encoder install` (downloads the resemblyzer "
                                f"{PACKAGE_VERSION} wheel, 16 MB, without torch)") from None
    except OSError as exc:
        raise VoiceEncoderError(f"cannot read the voice encoder's weights {path}: {exc}; check "
                                f"its permissions, or run `ser encoder install --force`") from None
    digest = _sha256(data)
    if digest != WEIGHTS_SHA256:
        raise VoiceEncoderError(f"the voice encoder's weights {path} are altered or truncated "
                                f"(sha256 {digest}, {len(data)} bytes; expected {WEIGHTS_SHA256});"
                                f" run `ser encoder install --force`")
    return VoiceEncoder(read_state_dict(data, source=str(path)))


# ---- Partials and the network ----------------------------------------------------------------


def partial_starts(n_samples: int, *, step_frames: int = PARTIAL_STEP_FRAMES,
                   min_coverage: float = MIN_COVERAGE, max_partials: int | None = None
                   ) -> np.ndarray:
    """First mel frame of each partial of a signal of ``n_samples`` samples.

    resemblyzer's ``compute_partial_slices`` with the step given in frames: partials of
    `PARTIAL_FRAMES` every ``step_frames``; the last one is dropped when less than
    ``min_coverage`` of it is signal, unless it is the only one (there is always one). With
    ``max_partials``, a signal that would get more gets that many, evenly spread (one: the
    middle 1.6 s).

    Returns
    -------
    np.ndarray
        int64 ``(n_partials,)``; partial ``k`` covers frames ``[s_k, s_k + 160)`` and samples
        ``[160 s_k, 160 (s_k + 160))``, which may reach past the signal (zero-padded).
    """
    if not 0 < min_coverage <= 1 or not 0 < step_frames <= PARTIAL_FRAMES:
        raise ValueError(f"need 0 < min_coverage <= 1 and 0 < step_frames <= {PARTIAL_FRAMES}")
    n_frames = int(np.ceil((n_samples + 1) / HOP_LENGTH))
    steps = max(1, n_frames - PARTIAL_FRAMES + step_frames + 1)
    starts = np.arange(0, steps, step_frames, dtype=np.int64)
    last = starts[-1] * HOP_LENGTH
    coverage = (n_samples - last) / (PARTIAL_FRAMES * HOP_LENGTH)
    if coverage < min_coverage and starts.size > 1:
        starts = starts[:-1]
    if max_partials is not None and starts.size > max_partials:
        last_start = max(n_frames - PARTIAL_FRAMES, 0)
        if max_partials == 1:  # the middle of the signal
            starts = np.array([last_start // 2], dtype=np.int64)
        else:  # evenly spread, the first and last partials inside the signal
            starts = np.round(np.linspace(0, last_start, max_partials)).astype(np.int64)
    return starts


def mel_spectrogram(y: np.ndarray) -> np.ndarray:
    """The encoder's input: power mel spectrogram, ``(frames, 40)`` float32.

    ``librosa.feature.melspectrogram(y=y, sr=16000, n_fft=400, hop_length=160, n_mels=40).T``
    with ``frames = 1 + len(y) // 160`` (centred frames, zero-padded ends), computed by the
    project's numpy ports of librosa's STFT and mel filter bank: workers do not import librosa.
    """
    # here, not at the top: the light process that calls `encoder_params` skips scipy
    from etl.audio.dsp import librosa_stft_magnitude
    from etl.audio.filters import mel as mel_filters

    magnitude = librosa_stft_magnitude(np.asarray(y, dtype=np.float32), n_fft=N_FFT,
                                       hop=HOP_LENGTH)
    np.square(magnitude, out=magnitude)
    basis = mel_filters(sr=ENCODER_RATE, n_fft=N_FFT, n_mels=N_MELS)
    return np.ascontiguousarray((basis @ magnitude).T)


def _level_scaled(segment: np.ndarray) -> np.ndarray | None:
    """``segment`` scaled to `LEVEL_TARGET_DBFS` RMS as float32; None if empty, silent or
    not finite."""
    if segment.size == 0:
        return None
    rms = float(np.sqrt(np.mean(np.square(segment, dtype=np.float64))))
    if not rms > 0.0 or not np.isfinite(rms):
        return None
    gain = 10.0 ** (LEVEL_TARGET_DBFS / 20.0) / rms
    return (segment * gain).astype(np.float32)


def _segment_partials(segment: np.ndarray, *, step_frames: int, min_coverage: float,
                      max_partials: int | None, pad_short: bool
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Mel partials of one level-scaled segment: float32 ``(n_partials, 160, 40)`` and the
    frames of each that are signal, int ``(n_partials,)``. A segment shorter than one partial
    is one partial of its own frames (``pad_short``: zero-padded to 160, as resemblyzer)."""
    starts = partial_starts(segment.size, step_frames=step_frames, min_coverage=min_coverage,
                            max_partials=max_partials)
    mel_frames = 1 + segment.size // HOP_LENGTH
    if not pad_short and mel_frames < PARTIAL_FRAMES:
        mel = mel_spectrogram(segment)
        mels = np.zeros((1, PARTIAL_FRAMES, N_MELS), dtype=np.float32)
        mels[0, :mel_frames] = mel
        return mels, np.array([mel_frames])
    stop = int(starts[-1] + PARTIAL_FRAMES) * HOP_LENGTH
    if stop >= segment.size:  # as resemblyzer: pad, else the mel of the whole signal
        segment = np.pad(segment, (0, stop - segment.size))
    mel = mel_spectrogram(segment)
    return (np.stack([mel[s:s + PARTIAL_FRAMES] for s in starts]),
            np.full(starts.size, PARTIAL_FRAMES))


class VoiceEncoder:
    """resemblyzer's GE2E encoder as float32 numpy arrays (`load_encoder` builds it).

    Parameters
    ----------
    state : the state dict from `read_state_dict` (torch names and shapes).

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
            scaled = _level_scaled(y[lo:hi])
            if scaled is None:
                continue
            mels, frames = _segment_partials(scaled, step_frames=step_frames,
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
