"""Feature benchmark on RAVDESS: the seed extractor vs `ser features`, side by side. Prints JSON.

(1) ``seed``: the seed blog posts' extractor, one process: ``librosa.load`` at its default
    22,050 Hz, then ``librosa.feature.mfcc(n_mfcc=40)``, ``chroma_stft(S=|stft|)`` and
    ``melspectrogram`` means, each computing its own spectrogram (180 values per file).
(2) ``project_<set>``: ``ser features --set <set>`` end to end as a user runs it (a new process:
    Python start-up, Prefect flow, decode -> features -> COPY into PostgreSQL), against a scratch
    embedded PostgreSQL in a temporary SER_HOME after ``ser ingest ravdess`` (clip rows are
    inserted directly if the ingest command is unavailable). ``project_<set>_no_prefect`` is the
    same work with ``--no-prefect`` (shows the flow's fixed start-up cost).

Every file is read once before any timing (warm page cache for all runs alike), and the seed
runs once untimed on 5 files first: librosa's first run ever compiles its numba kernels and
caches them on disk, a one-time cost no user pays twice. The machine is a shared VM whose speed
drifts by 10-20 % within minutes, so ``--repeat`` rounds (default 5) each run the seed and every
project variant in turn; each row is its median run and ``walls_s`` lists them all. One untimed
``ser features`` flow runs first too (the Prefect server's first run of a new flow is slow).
``per_clip_cpu_ms``: a worker's CPU per clip by stage, in one process (see `per_clip_cost`).
Reported per run: files/s, real-time factor (audio seconds per wall second), peak RSS of the
whole process tree (sampled every 50 ms; the sum of RSS counts pages shared by forked workers
more than once), feature count, machine-wide busy CPU seconds, and ratios of files/s to (1).
``flow_seconds`` is the extraction run's own time (``extraction_window_s``); the rest of
``wall_s`` is interpreter start-up, imports, Prefect and exit. ``speedup_vs_seed_excluding_startup`` compares that window with
the seed's loop (its run minus Python start-up and the librosa import).
``long_clip``: one 20-minute recording through `extract_files` per set (peak RSS, segments).
seed180 from the database is compared per file with (1): max abs error of the MFCC and chroma
means, max relative error of mel means (bands above 1e-6 of the file's largest), correlation.

Usage: python bench/features.py [--data DIR] [--limit N] [--workers 2] [--sets seed180,rich]
``--limit`` restricts (1) to the first N files for quick runs (ratios then use its files/s);
final numbers use all files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.memory import TreeMonitor
from bench.scratch import scratch_home

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "ravdess"
SER = str(Path(sys.executable).with_name("ser"))


def _files(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in {".wav", ".flac"})


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (user+nice+system+irq), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _machine() -> dict[str, Any]:
    """What the ratios were measured on: they move with the CPU (the seed is dominated by
    librosa's Python overhead and BLAS threads, the project by FFTs, FLAC decoding and numpy's
    SIMD loops), so a result is only comparable with runs on the same kind of machine."""
    info: dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = dict(line.split(":", 1) for line in text.splitlines()[:30] if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = set(fields.get("flags", "").split())
        info.update({"cpu_model": fields.get("model name"), "cpu_family": fields.get("cpu family"),
                     "cpu_model_id": fields.get("model"),
                     "simd": [f for f in ("avx2", "fma", "avx512f") if f in flags]})
    except OSError:
        pass
    from importlib.metadata import version

    info["python"] = sys.version.split()[0]
    info.update({pkg: version(pkg) for pkg in ("numpy", "scipy", "librosa", "soundfile", "soxr",
                                                "miniaudio")})
    return info


def _warm_page_cache(files: list[Path]) -> None:
    """Read every file once so no timed run pays for cold storage (the first run would)."""
    for path in files:
        path.read_bytes()


def _timed(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``: wall seconds, peak RSS of its process tree, machine-wide busy CPU seconds
    while it ran, and its stdout."""
    busy = _busy_cpu_s()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMonitor(proc.pid) as memory:
        out, err = proc.communicate()
    wall = time.perf_counter() - started
    busy = _busy_cpu_s() - busy
    peak = memory.peak_rss
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall": wall, "peak": peak, "busy": busy, "out": out}


def seed_worker(list_path: Path, out_path: Path) -> None:
    """(1) The seed extractor; writes {path: vector} to an .npz."""
    import librosa

    paths = list_path.read_text().splitlines()
    vectors = np.zeros((len(paths), 180), dtype=np.float32)
    loop_started = time.perf_counter()
    for i, path in enumerate(paths):
        x, sample_rate = librosa.load(path)
        stft = np.abs(librosa.stft(x))
        mfccs = np.mean(librosa.feature.mfcc(y=x, sr=sample_rate, n_mfcc=40).T, axis=0)
        chroma = np.mean(librosa.feature.chroma_stft(S=stft, sr=sample_rate).T, axis=0)
        mel = np.mean(librosa.feature.melspectrogram(y=x, sr=sample_rate).T, axis=0)
        vectors[i] = np.hstack((mfccs, chroma, mel))
    np.savez(out_path, paths=np.array(paths), X=vectors,
             loop_s=np.array(time.perf_counter() - loop_started))


def _summary(name: str, n_files: int, audio_s: float, wall: float, peak: int, n_features: int,
             base_fps: float | None, busy_cpu_s: float) -> dict[str, Any]:
    fps = n_files / wall
    row = {"files": n_files, "wall_s": round(wall, 2), "files_per_s": round(fps, 2),
           "realtime_factor": round(audio_s / wall, 1), "peak_rss_mb": round(peak / 2**20, 1),
           "n_features": n_features, "machine_busy_cpu_s": round(busy_cpu_s, 2)}
    if base_fps:
        row["speedup_vs_seed"] = round(fps / base_fps, 2)
    return row


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (the upper one of an even count)."""
    return sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]


def _compare(db_paths: list[str], db_X: np.ndarray, seed: dict[str, np.ndarray]) -> dict[str, Any]:
    mfcc_err, chroma_err, mel_err, corr = [], [], [], []
    for path, ours in zip(db_paths, db_X, strict=True):
        ref = seed.get(path)
        if ref is None:
            continue
        mfcc_err.append(float(np.max(np.abs(ours[:40] - ref[:40]))))
        chroma_err.append(float(np.max(np.abs(ours[40:52] - ref[40:52]))))
        mel_ref = ref[52:]
        big = mel_ref > 1e-6 * mel_ref.max()
        mel_err.append(float(np.max(np.abs(ours[52:][big] - mel_ref[big]) / mel_ref[big])))
        corr.append(float(np.corrcoef(ours, ref)[0, 1]))
    if not corr:
        return {"files_compared": 0}
    return {
        "files_compared": len(corr),
        "mfcc_max_abs_err": {"median": float(np.median(mfcc_err)), "max": max(mfcc_err)},
        "chroma_max_abs_err": {"median": float(np.median(chroma_err)), "max": max(chroma_err)},
        "mel_max_rel_err": {"median": float(np.median(mel_err)), "max": max(mel_err)},
        "correlation": {"min": min(corr), "median": float(np.median(corr))},
        "tolerance": "MFCC |err| < 0.01, chroma |err| < 1e-4, mel rel err < 1e-2 (bands > 1e-6 of "
                     "the file's largest), correlation > 0.99999",
        "within_tolerance": bool(max(mfcc_err) < 0.01 and max(chroma_err) < 1e-4
                                 and max(mel_err) < 1e-2 and min(corr) > 0.99999),
    }


def segments_speed(files: list[Path], *, minutes: float = 10.0, seed: int = 0) -> dict[str, Any]:
    """`extract_segments` cost for the telephony rich set on one long 8 kHz channel.

    The channel is real RAVDESS speech (resampled to 8 kHz) separated by 0.5-4 s pauses, as
    one role of a call; segments are the speech stretches cut into windows of at most 4 s
    (the nightly scorer's default). Also the worst case: 4 s windows over the whole channel.
    """
    from etl.audio.decode import load_audio
    from etl.features.extraction import extract_segments
    from etl.features.specs import feature_spec

    rng = np.random.default_rng(seed)
    spec = feature_spec("rich", "telephony")
    parts: list[np.ndarray] = []
    segments: list[tuple[float, float]] = []
    t = 0.0
    i = 0
    while t < minutes * 60:
        y, _ = load_audio(files[i % len(files)], sr=8000)
        gap = float(rng.uniform(0.5, 4.0))
        parts += [np.zeros(int(gap * 8000), np.float32), y]
        start = t + gap
        t = start + len(y) / 8000
        while start < t - 0.5:  # windows of <= 4 s over this speech stretch
            segments.append((start, min(start + 4.0, t)))
            start += 4.0
        i += 1
    channel = np.concatenate(parts)
    duration = len(channel) / 8000
    speech_s = sum(e - s for s, e in segments)
    out: dict[str, Any] = {"channel_s": round(duration, 1), "speech_share": round(speech_s / duration, 2),
                           "n_features": spec.n_features}
    extract_segments(channel[: 8000 * 20], 8000, spec, segments[:3])  # warm caches
    whole = [(s, min(s + 4.0, duration)) for s in np.arange(0.0, duration - 1.0, 4.0)]
    for label, segs in (("speech_windows", segments), ("whole_channel_windows", whole)):
        best_cpu, best_wall = float("inf"), float("inf")
        for _ in range(3):
            c0, w0 = time.process_time(), time.perf_counter()
            X, valid = extract_segments(channel, 8000, spec, segs)
            best_cpu = min(best_cpu, time.process_time() - c0)
            best_wall = min(best_wall, time.perf_counter() - w0)
        assert np.isfinite(X).all()
        out[label] = {"segments": len(segs), "valid": int(valid.sum()),
                      "cpu_s": round(best_cpu, 3), "wall_s": round(best_wall, 3),
                      "realtime_factor_cpu": round(duration / best_cpu),
                      "realtime_factor_wall": round(duration / best_wall)}
    return out


def long_clip_memory(files: list[Path], scratch: Path, *, minutes: float = 20.0) -> dict[str, Any]:
    """One long recording through `extract_files` (a fresh process per set, for its peak RSS).

    The recording is RAVDESS speech (48 kHz, 16-bit mono FLAC) with 0.5-2.5 s pauses, as a
    manifest of interviews or un-split calls would hold. Reports wall time, the process's peak
    RSS (Python and numpy included) and the speech segments stored beside the clip vector.
    """
    import soundfile as sf

    parts: list[np.ndarray] = []
    total = 0
    for i, path in enumerate(files):
        y, _ = sf.read(str(path), dtype="int16")
        parts += [y if y.ndim == 1 else y[:, 0], np.zeros(int(48000 * (0.5 + i % 3)), np.int16)]
        total += len(parts[-2]) + len(parts[-1])
        if total >= minutes * 60 * 48000:
            break
    path = scratch / "long.flac"
    sf.write(str(path), np.concatenate(parts), 48000, subtype="PCM_16")
    out: dict[str, Any] = {"minutes": round(total / 48000 / 60, 1), "sample_rate": 48000}
    for set_name in ("rich", "seed180"):
        code = ("import json, resource, sys, time\n"
                f"sys.path.insert(0, {str(ROOT)!r})\n"
                "from etl.features.extraction import extract_files, feature_spec\n"
                "t = time.perf_counter()\n"
                f"(r,) = extract_files([(1, {str(path)!r})], feature_spec({set_name!r}))\n"
                "print(json.dumps({'seconds': round(time.perf_counter() - t, 2), "
                "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "
                "'segments': 0 if r.segments is None else len(r.segments), 'error': r.reason}))")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        out[set_name] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def per_clip_cost(files: list[Path], *, n: int = 300) -> dict[str, Any]:
    """Where a worker's time goes, per clip, one process (BLAS single-threaded as in workers).

    Stages are timed over ``n`` RAVDESS files (best of 2 passes): decoding the 48 kHz FLAC,
    soxr HQ resampling, then for seed180 the float64 STFT, the tuning estimate and the rest
    (mel, MFCC, chroma), and for rich the frame descriptors and their statistics. The first
    three are fixed by the seed's own numbers (libFLAC's output, librosa.load's soxr_hq, and a
    float64 STFT that keeps the tuning estimate identical).
    """
    from etl.audio import dsp
    from etl.audio.decode import load_audio, resample
    from etl.features import extraction as features
    from etl.features.seed import seed_vector

    def best_of(fn: Any, items: list[Any]) -> float:
        best = float("inf")
        for _ in range(2):
            started = time.process_time()
            for item in items:
                fn(item)
            best = min(best, time.process_time() - started)
        return round(best / len(items) * 1e3, 3)

    paths = files[:n]
    seed_spec, rich_spec = features.feature_spec("seed180"), features.feature_spec("rich")
    p = seed_spec.params
    with features._one_blas_thread():
        native = [load_audio(path, sr=None)[0] for path in paths]
        at_22k = [resample(y, 48000, 22050) for y in native]
        at_16k = [resample(y, 48000, 16000) for y in native]
        mags = [dsp.librosa_stft_magnitude(y, n_fft=p["n_fft"], hop=p["hop"]) for y in at_22k]
        out = {
            "clips": len(paths),
            "decode_flac_48k": best_of(lambda path: load_audio(path, sr=None), paths),
            "resample_soxr_hq_to_22050": best_of(lambda y: resample(y, 48000, 22050), native),
            "resample_soxr_hq_to_16000": best_of(lambda y: resample(y, 48000, 16000), native),
            "seed180_stft_float64": best_of(
                lambda y: dsp.librosa_stft_magnitude(y, n_fft=p["n_fft"], hop=p["hop"]), at_22k),
            "seed180_tuning": best_of(lambda m: dsp.estimate_tuning(m, sr=22050), mags),
            "seed180_features_all": best_of(lambda y: seed_vector(y, seed_spec), at_22k),
            "rich_features_all": best_of(
                lambda y: features.extract(y, 16000, rich_spec), at_16k),
        }
    # The whole worker function per clip (decode, resample, features, result), as a pool
    # worker runs it: more than the sum of the stages above (those reuse warm buffers).
    items = list(enumerate(str(path) for path in paths))
    for name, spec in (("seed180", seed_spec), ("rich", rich_spec)):
        started = time.process_time()
        features.extract_files(items, spec)
        out[f"{name}_extract_files"] = round((time.process_time() - started) / len(items) * 1e3, 3)
    return out


def _insert_clips(env: dict[str, str], files: list[Path]) -> None:
    """Fallback when `ser ingest` is not available: clip rows straight into the table."""
    import soundfile as sf
    from sqlalchemy import insert

    from db.engine import cached_engine, session_scope
    from db.models import Clip
    from etl.audio.decode import sha256_file
    from flows.database import database_url

    os.environ.update(env)
    rows = []
    for path in files:
        info = sf.info(str(path))
        rows.append({"corpus": "ravdess", "path": str(path), "clip_name": path.stem,
                     "sha256": sha256_file(path), "emotion": "unknown", "emotion_code": "00",
                     "label_source": "bench", "sample_rate": info.samplerate,
                     "channels": info.channels, "frames": info.frames,
                     "duration_s": info.duration, "size_bytes": path.stat().st_size})
    with session_scope(cached_engine(database_url())) as session:
        session.execute(insert(Clip), rows)


def main() -> None:
    args = _parse_args()
    if args.seed_worker:
        seed_worker(*args.seed_worker)
        return
    files = _files(args.data)
    if not files:
        raise SystemExit(f"no audio under {args.data}")
    if args.segments_only:
        with tempfile.TemporaryDirectory(prefix="ser-bench-long-") as tmp:
            print(json.dumps({"extract_segments": segments_speed(files),
                              "long_clip": long_clip_memory(files, Path(tmp))}, indent=2))
        return
    print(json.dumps(_benchmark(args, files), indent=2))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="files for the seed baseline")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds (seed and every project run); rows are median runs")
    parser.add_argument("--sets", default="seed180,rich")
    parser.add_argument("--no-prefect-runs", action=argparse.BooleanOptionalAction, default=True,
                        help="also time --no-prefect runs")
    parser.add_argument("--segments-only", action="store_true",
                        help="only the extract_segments speed test and the long-clip run")
    parser.add_argument("--seed-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def _benchmark(args: argparse.Namespace, files: list[Path]) -> dict[str, Any]:
    """The whole benchmark (see the module docstring), in a scratch SER_HOME removed after."""
    import soundfile as sf

    audio_s = sum(sf.info(str(p)).duration for p in files)
    seed_files = files[: args.limit] if args.limit else files
    seed_audio_s = sum(sf.info(str(p)).duration for p in seed_files)
    result: dict[str, Any] = {"data": str(args.data), "files": len(files),
                              "audio_s": round(audio_s, 1), "workers": args.workers,
                              "cpus": os.cpu_count(), "machine": _machine(),
                              "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    _warm_page_cache(files)
    with scratch_home(None, prefix="ser-bench-features-",
                      extra_env={"SER_WORKERS": str(args.workers)}) as (scratch, env):
        list_path = _seed_list(scratch, seed_files)
        _scratch_project(env, args, files, result)
        # Project modules load only here, in the scratch SER_HOME: the timed seed worker
        # (this same script) must not pay for importing them.
        from db.engine import cached_engine
        from flows.database import database_url

        engine = cached_engine(database_url())
        set_names = [s for s in args.sets.split(",") if s]
        seed_runs, project_runs = _timed_rounds(engine, env, args, set_names=set_names,
                                                list_path=list_path, scratch=scratch)
        seed_run = _median(seed_runs)
        seed_npz = np.load(seed_run["npz"])
        seed_loop_s = float(seed_npz["loop_s"])
        result["seed"] = _summary("seed", len(seed_files), seed_audio_s, seed_run["wall"],
                                  seed_run["peak"], 180, None, seed_run["busy"])
        result["seed"].update({"loop_s": round(seed_loop_s, 2),
                               "startup_s": round(seed_run["wall"] - seed_loop_s, 2),
                               "walls_s": [round(r["wall"], 2) for r in seed_runs]})
        for name, runs in project_runs.items():
            result[name] = _project_row(name, runs, seed_fps=len(seed_files) / seed_run["wall"],
                                        seed_loop_fps=len(seed_files) / seed_loop_s)
        if "seed180" in set_names:  # the last seed180 run's vectors against the median seed run
            seed = {str(p): x for p, x in zip(seed_npz["paths"], seed_npz["X"], strict=True)}
            result["seed180_vs_seed"] = _seed180_vs_seed(engine, seed)
        engine.dispose()
        result["extract_segments"] = segments_speed(files)
        result["long_clip"] = long_clip_memory(files, scratch)
        result["per_clip_cpu_ms"] = per_clip_cost(files)
        result["per_clip_cpu_ms"]["seed_per_file_wall"] = round(seed_loop_s / len(seed_files) * 1e3, 2)
        result["cpu_bound_note"] = (
            "machine_busy_cpu_s / (cpus * wall_s) near 1 means every core was busy for the "
            "whole run: the end-to-end rate is bounded by total CPU work, start-up included")
        result["targets"] = _targets(result)
        result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _seed_list(scratch: Path, seed_files: list[Path]) -> Path:
    """Write the seed's file list; run the seed once, untimed, on 5 of them.

    The seed's first run ever compiles librosa's numba kernels (and caches them on disk):
    a cost a user pays once, so it is paid here, untimed.
    """
    list_path = scratch / "files.txt"
    list_path.write_text("\n".join(str(p) for p in seed_files))
    warm_list = scratch / "warm.txt"
    warm_list.write_text("\n".join(str(p) for p in seed_files[:5]))
    subprocess.run([sys.executable, __file__, "--seed-worker", str(warm_list),
                    str(scratch / "warm.npz")], check=True, capture_output=True)
    return list_path


def _scratch_project(env: dict[str, str], args: argparse.Namespace, files: list[Path],
                     result: dict[str, Any]) -> None:
    """RAVDESS ingested into the scratch home's database (``env``: bench/scratch.py's).
    Records how the clips got in (``ingest``, ``prefect_server``) in ``result``."""
    t0 = time.perf_counter()
    subprocess.run([SER, "db", "upgrade"], env=env, check=True, capture_output=True)
    ingest = subprocess.run([SER, "ingest", "ravdess", str(args.data)], env=env,
                            capture_output=True, text=True, check=False)
    if ingest.returncode != 0:
        _insert_clips(env, files)
        result["ingest"] = f"ser ingest unavailable ({ingest.returncode}); rows inserted"
    else:
        result["ingest"] = f"ser ingest ravdess: {time.perf_counter() - t0:.1f} s (untimed)"
    # `ser ingest` started the background Prefect server; the timed runs reuse it, as any
    # command after the first does.
    result["prefect_server"] = "local background server, warm (started by the ingest step)"


def _timed_rounds(engine: Any, env: dict[str, str], args: argparse.Namespace, *,
                  set_names: list[str], list_path: Path,
                  scratch: Path) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """``(seed runs, {"project_<set><variant>": runs})``, ``args.repeat`` rounds of each.

    Rounds interleave the seed and every project variant, so drift in the machine's speed
    (a shared VM) reaches both sides alike. Each project run starts from no stored vectors.
    """
    from sqlalchemy import text

    from db.engine import session_scope

    variants = [("", [])] + ([("_no_prefect", ["--no-prefect"])] if args.no_prefect_runs else [])
    # The first `ser features` flow after the ingest flow has been slower than any later one
    # (the Prefect server's first run of a new flow): paid once, untimed.
    subprocess.run([SER, "features", "--set", set_names[0], "--workers", str(args.workers),
                    "--json"], env=env, check=True, capture_output=True)
    seed_runs: list[dict[str, Any]] = []
    project_runs: dict[str, list[dict[str, Any]]] = {}
    for round_no in range(args.repeat):
        npz = scratch / f"seed{round_no}.npz"
        seed_runs.append({**_timed([sys.executable, __file__, "--seed-worker",
                                    str(list_path), str(npz)], dict(os.environ)), "npz": npz})
        for set_name in set_names:
            for suffix, extra in variants:
                with session_scope(engine) as session:
                    session.execute(text(
                        "DELETE FROM clip_features f USING feature_sets s WHERE "
                        "s.id = f.feature_set_id AND s.name = :n"), {"n": set_name})
                run = _timed([SER, "features", "--set", set_name, "--workers",
                              str(args.workers), "--json", *extra], env)
                project_runs.setdefault(f"project_{set_name}{suffix}", []).append(
                    {**run, "report": json.loads(run["out"])})
    return seed_runs, project_runs


def _project_row(name: str, runs: list[dict[str, Any]], *, seed_fps: float,
                 seed_loop_fps: float) -> dict[str, Any]:
    """The median run of one project variant, with its ratios to the seed (``seed_fps`` end to
    end, ``seed_loop_fps`` without interpreter start-up and imports)."""
    from etl.features.specs import feature_spec

    run = _median(runs)
    report = run["report"]
    # clips the run processed (ingest folds byte-identical files into one clip)
    row = _summary(name, report["pending"], report["audio_s"], run["wall"], run["peak"],
                   feature_spec(report["feature_set"]).n_features, seed_fps, run["busy"])
    window = report["seconds"]
    row.update({"walls_s": [round(r["wall"], 2) for r in runs],
                "stored": report["stored"], "errors": report["errors"],
                "flow_seconds": round(report["seconds"], 2),
                "extraction_window_s": round(window, 2),
                "startup_and_exit_s": round(run["wall"] - window, 2),
                # both sides without interpreter start-up and imports
                "speedup_vs_seed_excluding_startup": round(
                    (report["pending"] / window) / seed_loop_fps, 2)})
    return row


def _seed180_vs_seed(engine: Any, seed: dict[str, np.ndarray]) -> dict[str, Any]:
    """The stored seed180 vectors compared per file with the seed's (:func:`_compare`)."""
    from sqlalchemy import text

    from db.engine import session_scope
    from etl.features.specs import feature_spec
    from etl.features.store import load_feature_matrix

    with session_scope(engine) as session:
        fs_id = session.scalar(text(
            "SELECT id FROM feature_sets WHERE name='seed180' AND channel='studio' "
            "AND params_hash = :h"), {"h": feature_spec("seed180").params_hash})
        ids, X = load_feature_matrix(session, feature_set_id=fs_id)
        paths = dict(session.execute(text("SELECT id, path FROM clips")).all())
    return _compare([paths[int(i)] for i in ids], X, seed)


def _targets(result: dict[str, Any]) -> dict[str, bool]:
    return {
        "rich_3x_seed": result.get("project_rich", {}).get("speedup_vs_seed", 0) >= 3,
        "seed180_5x_seed": result.get("project_seed180", {}).get("speedup_vs_seed", 0) >= 5,
        "seed180_equivalent": result.get("seed180_vs_seed", {}).get("within_tolerance", False),
        "segments_1500x_cpu": result["extract_segments"]["speech_windows"][
            "realtime_factor_cpu"] >= 1500,
    }


if __name__ == "__main__":
    main()
