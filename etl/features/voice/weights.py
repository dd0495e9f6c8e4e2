"""The voice encoder's pretrained weights: installed, checked, read without torch, loaded.

One file, resemblyzer 0.1.4's ``pretrained.pt``, followed from the package index to the
encoder: `install_weights` (``ser encoder install``) has pip download the resemblyzer wheel
without its dependencies (no torch), checks the ``pretrained.pt`` inside against
`WEIGHTS_SHA256` and writes it to `weights_path` inside the virtualenv, shared by every
SER_HOME; `weights_status` says whether it is there and intact; `read_state_dict` parses it
(the legacy torch serialization) with a restricted unpickler that never imports torch; and
`load_encoder` checks the sha256 again before parsing and builds the `VoiceEncoder`.
Resemblyzer (Corentin Jemine, Resemble AI) is Apache-2.0; its LICENSE is installed beside the
weights, as the licence requires.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from etl.features.voice.encoder import HIDDEN, N_LAYERS, VoiceEncoder
from etl.features.voice.params import (
    EMBEDDING_DIM,
    ENCODER_NAME,
    N_MELS,
    PACKAGE,
    PACKAGE_VERSION,
    WEIGHTS_SHA256,
    VoiceEncoderError,
)

# Members of the wheel ``Resemblyzer-0.1.4-py3-none-any.whl``.
WEIGHTS_MEMBER = "resemblyzer/pretrained.pt"
LICENSE_MEMBER = f"Resemblyzer-{PACKAGE_VERSION}.dist-info/LICENSE"

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL = 1001
_PIP_TIMEOUT_S = 600
_PIP_TAIL_LINES = 8


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
