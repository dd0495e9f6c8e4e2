"""bench/field_calls.py: the held-out call builder that shares no level or line code with the
project's generator: files, truth, levels, lines, determinism."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from etl.synthetic.clips import ClipBank
from etl.synthetic.timeline import customer_negative_share, read_timeline

ROOT = Path(__file__).resolve().parent.parent


def _load_module():  # bench/ is not a package on the import path of the tests
    spec = importlib.util.spec_from_file_location("field_calls", ROOT / "bench" / "field_calls.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["field_calls"] = module
    spec.loader.exec_module(module)
    return module


fc = _load_module()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    bank = ClipBank.synthetic(actors=range(1, 4), per_emotion=1, sr=fc.MIX_SR)
    out = tmp_path_factory.mktemp("field")
    records = fc.build_calls(out, bank=bank, calls_per_line=2, minutes=0.4, seed=7)
    return out, records


def test_every_line_writes_stereo_calls_at_its_rate_with_truth(built) -> None:
    out, records = built
    rows = list(csv.DictReader((out / "calls.csv").open()))
    assert [r["line"] for r in rows] == [line for line in fc.LINES for _ in range(2)]
    assert {"call_id", "file", "customer_channel", "scenario", "line"} <= set(rows[0])
    for row in rows:
        info = sf.info(str(out / row["file"]))
        expected = 16000 if row["line"] == "wideband" else 8000
        if row["line"] != "packet_loss":
            assert info.samplerate == expected
        assert (info.channels, info.subtype) == (2, "PCM_16")
        assert info.samplerate == int(row["sample_rate"])
        timeline = read_timeline(out / f"{row['call_id']}.timeline.csv")
        assert {e.role for e in timeline} == {"agent", "customer"}
        assert all(e.emotion in ("neutral", "calm", "happy") for e in timeline
                   if e.role == "agent")
        assert 0.0 <= customer_negative_share(timeline) <= 1.0
    assert json.loads((out / "field_calls.json").read_text())["calls"] == records


def test_emotions_keep_natural_loudness_and_parties_their_own_level() -> None:
    bank = ClipBank.synthetic(actors=(1,), per_emotion=2, sr=fc.MIX_SR)
    rng = np.random.default_rng(0)
    levels = {e: [] for e in ("angry", "calm", "sad", "neutral", "happy")}
    for clip in bank.clips:
        if clip.emotion in levels:
            gain, _ = fc.utterance_gain(clip, fc.MIX_SR, party_angry_dbfs=-20.0, rng=rng)
            levels[clip.emotion].append(fc.active_level_db(gain * clip.signal, fc.MIX_SR))
    angry = np.mean(levels["angry"])
    for soft in ("calm", "sad", "neutral"):
        assert 8.0 <= angry - np.mean(levels[soft]) <= 17.0
    assert np.mean(levels["calm"]) < np.mean(levels["happy"]) < angry
    assert fc.PARTY_ANGRY_DBFS[1] - fc.PARTY_ANGRY_DBFS[0] >= 20.0


def test_line_noise_floor_and_g711_quantiser() -> None:
    rng = np.random.default_rng(1)
    noise = fc.line_noise(8000 * 4, 8000, floor_dbfs=-60.0, band=(300.0, 3400.0), rng=rng)
    assert abs(10 * np.log10(np.mean(noise ** 2)) + 60.0) < 0.1
    x = np.linspace(-1, 1, 20001)
    y = fc.g711_mulaw(x)
    assert len(np.unique(np.round(y * 32768))) <= 256  # 8-bit codes
    assert np.max(np.abs(y - x)[np.abs(x) > 0.01] / np.abs(x)[np.abs(x) > 0.01]) < 0.05  # half a step


def test_packet_loss_rate_and_bursts() -> None:
    lost = fc.gilbert_elliott_losses(200_000, loss_rate=0.06, mean_burst=3.0,
                                     rng=np.random.default_rng(2))
    assert abs(lost.mean() - 0.06) < 0.01
    starts = np.flatnonzero(np.diff(lost.astype(int)) == 1)
    assert 2.5 < lost.sum() / len(starts) < 3.5


def test_reverb_decays_at_its_rt60_and_agc_boosts_soft_speech() -> None:
    ir = fc.room_impulse_response(16000, rt60_s=0.5, drr_db=0.0, rng=np.random.default_rng(3))
    energy = np.cumsum(ir[::-1] ** 2)[::-1]  # Schroeder integral
    decay = 10 * np.log10(energy / energy[0])
    t20 = np.argmax(decay < -25.0) - np.argmax(decay < -5.0)
    assert 0.35 < 3 * t20 / 16000 < 0.65
    soft = 10 ** (-45 / 20) * np.sin(np.arange(8000 * 4) * 0.3)
    out = fc.agc(soft, 8000, target_dbfs=-20.0, attack_s=0.3, release_s=0.6, max_gain_db=30.0)
    assert 10 * np.log10(np.mean(out[-8000:] ** 2)) > -30.0


def test_deterministic(tmp_path: Path) -> None:
    bank = ClipBank.synthetic(actors=range(1, 3), per_emotion=1, sr=fc.MIX_SR)

    def digest(folder: Path) -> dict[str, str]:
        fc.build_calls(folder, bank=bank, calls_per_line=1, minutes=0.3, seed=5,
                       lines=("packet_loss", "agc"))
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}

    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_scenarios_are_a_quota_per_line() -> None:
    quota = fc.scenario_quota(10)
    assert {k: quota.count(k) for k in set(quota)} == {
        "calm": 5, "escalating": 3, "upset": 1, "recovering": 1}
    assert len(fc.scenario_quota(7)) == 7
