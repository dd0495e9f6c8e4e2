"""Audio I/O shared by ingest, features and scoring.

Headers are read without decoding (soundfile.info; audioread only as a fallback for MP3 and
friends), content is identified by sha256, decoding goes through soundfile (whole 16-bit FLAC
files through miniaudio's dr_flac, which gives the same samples faster) and resampling through
soxr. Signals are float32, shape ``(n,)`` for mono or ``(channels, n)`` for multichannel.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from etl.audio.telephony import TELEPHONY_BAND_HZ, TELEPHONY_RATE

try:
    import miniaudio
except ImportError:  # pragma: no cover - a platform without its wheel decodes through soundfile
    miniaudio = None


AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif"})
# Mono files longer than this that are resampled on load are decoded in blocks (memory).
STREAM_DECODE_S = 60.0
STREAM_PREALLOCATE_MAX = 1 << 26  # samples (256 MB of float32: 70 min at 16 kHz)
# Rates the VAD, features and phone-line rules are made for: a phone line's 8 kHz to studio 48 kHz.
SUPPORTED_RATES_HZ = (8000, 48000)
# WAV data sizes streaming writers put in a header they cannot go back to (ffmpeg, sox on a
# pipe): the length is unknown, not declared, so such a file is not "truncated".
_WAV_UNKNOWN_SIZE = 0x7FFFF000


class AudioError(ValueError):
    """A file is not audio we can read (corrupt, empty, unsupported)."""


@dataclass(frozen=True, slots=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    audio_format: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_audio_path(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def sha256_file(path: Path, *, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def read_info(path: Path) -> AudioInfo:
    """Sample rate, channels and length from the file header (no full decode).

    The one place a recording's header is judged, for ingest and scoring alike: a WAV whose
    data chunk declares more audio than the file holds (a copy cut short) and a sample rate
    outside `SUPPORTED_RATES_HZ` are refused here rather than read as what is there.

    Raises
    ------
    AudioError
        zero-length, unreadable or non-audio file, a header claiming no samples, a truncated
        WAV, or a sample rate outside 8-48 kHz.
    """
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
        result = AudioInfo(int(info.samplerate), int(info.channels), int(info.frames),
                           str(info.format).lower())
    except Exception as sf_exc:  # noqa: BLE001 - libsndfile cannot read it; try audioread
        result = _read_info_audioread(path, sf_exc)
    if result.frames <= 0 or result.sample_rate <= 0 or result.channels <= 0:
        raise AudioError("header declares no audio samples")
    low, high = SUPPORTED_RATES_HZ
    if not low <= result.sample_rate <= high:
        raise AudioError(f"sample rate {result.sample_rate} Hz is outside {low // 1000}-"
                         f"{high // 1000} kHz; resample the recording into that range (e.g. "
                         "to 8 or 16 kHz)")
    _check_wav_complete(path)
    return result


def _check_wav_complete(path: Path) -> None:
    """AudioError when ``path`` is a WAV whose data chunk declares more than the file holds.

    libsndfile reads such a file as the frames that are there, so a half-copied recording
    would pass for a short one; the declared size is in the header, the held size is the file's.
    """
    with path.open("rb") as handle:
        riff = handle.read(12)
        if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RIFX") or riff[8:12] != b"WAVE":
            return
        order = "<" if riff[:4] == b"RIFF" else ">"
        file_size = path.stat().st_size
        byte_rate = block_align = 0
        while (header := handle.read(8)) and len(header) == 8:
            chunk, size = header[:4], struct.unpack(f"{order}I", header[4:])[0]
            start = handle.tell()
            if chunk == b"fmt " and size >= 16:
                _tag, _channels, _rate, byte_rate, block_align = struct.unpack(
                    f"{order}HHIIH", handle.read(14))
            elif chunk == b"data":
                held = file_size - start
                if (0 < size < _WAV_UNKNOWN_SIZE and byte_rate > 0
                        and size - held >= max(block_align, 1)):
                    raise AudioError(
                        f"truncated recording: its header declares {size / byte_rate:.2f} s of "
                        f"audio but the file holds {max(held, 0) / byte_rate:.2f} s; deliver the "
                        "complete file (write it, then rename it into place)")
                return
            handle.seek(start + size + (size & 1))  # chunks are padded to an even length


def _read_info_audioread(path: Path, original: Exception) -> AudioInfo:
    try:
        import audioread

        with audioread.audio_open(str(path)) as handle:
            frames = round(handle.duration * handle.samplerate)
            return AudioInfo(int(handle.samplerate), int(handle.channels), frames,
                             path.suffix.lower().lstrip("."))
    except Exception:  # noqa: BLE001
        message = str(original).splitlines()[0] if str(original) else type(original).__name__
        raise AudioError(f"not readable audio: {message}") from original


def load_audio(
    path: Path,
    *,
    sr: int | None = None,
    mono: bool = True,
    start_s: float = 0.0,
    duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``path`` to float32, optionally a window of it, resampled to ``sr`` with soxr.

    Returns
    -------
    (signal, sample_rate)
        signal has shape ``(n,)`` when ``mono`` else ``(channels, n)``.
    """
    whole_file = start_s == 0 and duration_s is None
    fast = _read_flac16(path) if whole_file else None
    if fast is not None:
        data, native_sr = fast
    else:
        try:
            with sf.SoundFile(str(path)) as handle:
                native_sr = handle.samplerate
                if (mono and sr is not None and sr != native_sr and whole_file
                        and handle.frames > STREAM_DECODE_S * native_sr):
                    return _decode_resampled(handle, sr), sr
                if start_s > 0:  # a FLAC seek is not free, even to frame 0
                    handle.seek(int(start_s * native_sr))
                data = _read_block(handle, -1 if whole_file else int(duration_s * native_sr))
        except Exception as exc:  # noqa: BLE001 - fall back to librosa/audioread for MP3 etc.
            data, native_sr = _load_fallback(path, exc, start_s=start_s, duration_s=duration_s)
    signal = data.T  # (channels, n)
    if mono:
        signal = signal.mean(axis=0) if signal.shape[0] > 1 else signal[0]
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    if sr is not None and sr != native_sr:
        signal = resample(signal, native_sr, sr)
        native_sr = sr
    return signal, int(native_sr)


def _read_block(handle: sf.SoundFile, frames: int) -> np.ndarray:
    """Up to ``frames`` frames as float32 ``(n, channels)``, decoded as `load_audio` does."""
    return handle.read(frames=frames, dtype="float32", always_2d=True)


def _read_flac16(path: Path) -> tuple[np.ndarray, int] | None:
    """A whole 16-bit FLAC file as `_read_block` would return it, and its rate, via dr_flac.

    dr_flac (miniaudio) gives the same samples as libFLAC behind libsndfile (checked on all
    1,200 RAVDESS files; tested) for less CPU, and decoding is the largest single cost of
    extracting a corpus clip (figures: docs/performance.md). None, and the caller goes through
    soundfile, for any other file: not FLAC,
    not 16-bit (libsndfile's own scaling), longer than `STREAM_DECODE_S` (those stream), or
    not decodable or not the length its header declares.
    """
    if miniaudio is None or path.suffix.lower() != ".flac":
        return None
    try:
        info = miniaudio.flac_get_file_info(str(path))
        if (info.sample_format != miniaudio.SampleFormat.SIGNED16
                or not 0 < info.num_frames <= STREAM_DECODE_S * info.sample_rate):
            return None
        decoded = miniaudio.flac_read_file_s16(str(path))
    except (miniaudio.MiniaudioError, OSError):  # soundfile's path words the error as ever
        return None
    if (decoded.num_frames, decoded.nchannels) != (info.num_frames, info.nchannels):
        return None
    data = np.frombuffer(decoded.samples, dtype=np.int16).reshape(-1, decoded.nchannels)
    return np.multiply(data, np.float32(1.0 / 32768.0), dtype=np.float32), int(info.sample_rate)


def _decode_resampled(handle: sf.SoundFile, sr: int, *, block_s: float = 10.0) -> np.ndarray:
    """The whole file, mono, resampled to ``sr``: decoded and resampled block by block.

    soxr's stream gives the same samples as its one-shot `resample` (tested), and the mono
    mix is per sample, so this equals `load_audio`'s in-memory path while holding only the
    output and one block (a one-hour 48 kHz file: 230 MB at 16 kHz instead of ~1.2 GB).
    """
    stream = soxr.ResampleStream(handle.samplerate, sr, 1, dtype="float32", quality="HQ")
    block = max(1, int(block_s * handle.samplerate))
    # The header's length sizes the output; capped, because a streamed WAV may declare an
    # absurd one (then the buffer grows as the samples really arrive).
    expected = int(np.ceil(handle.frames * sr / handle.samplerate)) + 64
    out = np.empty(min(expected, STREAM_PREALLOCATE_MAX), dtype=np.float32)
    n = 0
    while True:
        data = _read_block(handle, block)
        last = len(data) < block
        mixed = data.T.mean(axis=0) if data.shape[1] > 1 else data[:, 0]
        part = stream.resample_chunk(np.ascontiguousarray(mixed, dtype=np.float32), last=last)
        if n + len(part) > len(out):  # more samples than the buffer: grow by half
            out = np.concatenate([out[:n], np.empty(len(part) + len(out) // 2, np.float32)])
        out[n: n + len(part)] = part
        n += len(part)
        if last:
            return out[:n]


def _load_fallback(
    path: Path, original: Exception, *, start_s: float, duration_s: float | None
) -> tuple[np.ndarray, int]:
    try:
        import librosa

        data, native_sr = librosa.load(str(path), sr=None, mono=False, offset=start_s,
                                       duration=duration_s, dtype=np.float32)
    except Exception:  # noqa: BLE001
        raise AudioError(f"cannot decode: {str(original).splitlines()[0]}") from original
    data = np.atleast_2d(data).T
    return data, int(native_sr)


def resample(signal: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """soxr resampling along the last axis; float32 in, float32 out."""
    if from_sr == to_sr:
        return signal.astype(np.float32, copy=False)
    if signal.ndim == 1:
        return soxr.resample(signal, from_sr, to_sr, quality="HQ").astype(np.float32, copy=False)
    out = soxr.resample(signal.T, from_sr, to_sr, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


# Longer signals are band-passed at a fast FFT length (see `bandlimit`): 131 s at 8 kHz.
EXACT_BANDLIMIT_MAX = 1 << 20


def bandlimit(signal: np.ndarray, sr: int, *, low_hz: float, high_hz: float) -> np.ndarray:
    """Zero-phase FFT band-pass (brick wall with short cosine skirts); shape preserved.

    A length with a large prime factor sends the FFT to Bluestein's algorithm (a 20-minute
    8 kHz channel of 3 x 3,210,113 samples: 7.7 s instead of 0.5 s), so signals longer than
    `EXACT_BANDLIMIT_MAX` are zero padded to a fast length first (the result then differs only
    within a few tens of ms of the end); shorter ones keep their exact length and numbers.
    """
    from scipy.fft import next_fast_len  # here: scipy.fft stays off the paths that never pad

    n = signal.shape[-1]
    n_fft = n if n <= EXACT_BANDLIMIT_MAX else next_fast_len(n, real=True)
    spectrum = np.fft.rfft(signal, n=n_fft, axis=-1)
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    skirt = 50.0
    gain = np.clip((freqs - (low_hz - skirt)) / skirt, 0.0, 1.0) * np.clip(
        ((high_hz + skirt) - freqs) / skirt, 0.0, 1.0)
    return np.fft.irfft(spectrum * gain, n=n_fft, axis=-1)[..., :n].astype(np.float32)


def to_telephony(signal: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """What a phone line delivers: 8 kHz, 300-3400 Hz. Returns ``(signal_8k, 8000)``."""
    narrow = resample(signal, sr, TELEPHONY_RATE) if sr != TELEPHONY_RATE else signal
    low, high = TELEPHONY_BAND_HZ
    return bandlimit(narrow, TELEPHONY_RATE, low_hz=low, high_hz=high), TELEPHONY_RATE


def trim_silence(signal: np.ndarray, sr: int, *, top_db: float = 40.0,
                 frame_s: float = 0.025) -> np.ndarray:
    """Drop leading/trailing frames more than ``top_db`` below the loudest frame (mono)."""
    frame = max(1, int(frame_s * sr))
    n_frames = len(signal) // frame
    if n_frames == 0:
        return signal
    energy = np.square(signal[: n_frames * frame].reshape(n_frames, frame)).mean(axis=1)
    peak = float(energy.max())
    if peak <= 0.0:
        return signal[:0]
    loud = np.flatnonzero(10.0 * np.log10(energy / peak + 1e-20) > -top_db)
    return signal[loud[0] * frame: (loud[-1] + 1) * frame]
