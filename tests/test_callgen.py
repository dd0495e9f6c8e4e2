"""Synthetic call generator: files, ground truth, telephone line, determinism, CLI."""

from __future__ import annotations

import csv
import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from etl.synthetic.calls import SCENARIOS, CallGenConfig, compose_call, generate_calls
from etl.synthetic.clips import ClipBank
from etl.synthetic.line import telephone_line
from etl.synthetic.nonspeech import babble, dtmf_sequence, hold_music, ringback_tone
from etl.synthetic.speech import write_ravdess_corpus
from etl.synthetic.timeline import (
    NONSPEECH_KINDS,
    TimelineEvent,
    customer_negative_share,
    read_timeline,
    speech_events,
    truly_escalated,
    write_timeline,
)


@pytest.fixture(scope="module")
def bank() -> ClipBank:
    return ClipBank.synthetic(actors=range(1, 4), per_emotion=1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generate_writes_stereo_calls_timelines_and_manifest(bank: ClipBank, tmp_path: Path) -> None:
    calls = generate_calls(tmp_path, n_calls=3, minutes=0.4, bank=bank, seed=3)
    assert [c.call_id for c in calls] == ["call_0001", "call_0002", "call_0003"]
    with (tmp_path / "calls.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == [c.path.name for c in calls]
    assert {"call_id", "file", "agent_id", "queue", "started_at", "customer_channel"} <= set(rows[0])
    for call in calls:
        info = sf.info(str(call.path))
        assert (info.channels, info.samplerate, info.subtype) == (2, 8000, "PCM_16")
        assert 0.4 * 60 * 0.8 - 0.1 <= info.duration <= 0.4 * 60 * 1.2 + 0.1
        timeline = read_timeline(call.timeline_path)
        assert timeline == call.timeline
        assert {e.role for e in timeline} == {"agent", "customer"}
        assert all(0 <= e.start_s < e.end_s <= info.duration for e in timeline)
        early, late = SCENARIOS[call.scenario]
        assert {e.emotion for e in speech_events(timeline, role="customer")} <= set(early) | set(
            late)
        timeline = speech_events(timeline)
        # the agent's audio is on the left: alone, its speech is far louder there than right,
        # whose line noise may sit as little as ~10 dB under a soft agent (party levels and
        # noise floors vary per call)
        y, sr = sf.read(str(call.path), dtype="float32")
        alone = [a for a in timeline if a.role == "agent" and not any(
            c.role == "customer" and c.start_s < a.end_s and c.end_s > a.start_s
            for c in timeline)]
        assert alone
        span = y[int(alone[0].start_s * sr):int(alone[0].end_s * sr)]
        assert np.abs(span[:, 0]).mean() > 3 * np.abs(span[:, 1]).mean()


def test_generation_is_deterministic(bank: ClipBank, tmp_path: Path) -> None:
    a = generate_calls(tmp_path / "a", n_calls=2, minutes=0.2, bank=bank, seed=7)
    b = generate_calls(tmp_path / "b", n_calls=2, minutes=0.2, bank=bank, seed=7)
    c = generate_calls(tmp_path / "c", n_calls=2, minutes=0.2, bank=bank, seed=8)
    assert [_sha(x.path) for x in a] == [_sha(x.path) for x in b]
    assert [_sha(x.path) for x in a] != [_sha(x.path) for x in c]


def test_nonspeech_is_in_the_timeline_on_its_channel(bank: ClipBank) -> None:
    channel_of = {"ringback": {"agent"}, "ivr": {"agent"}, "hold": {"agent"},
                  "dtmf": {"customer"}, "babble": {"agent", "customer"}}
    seen: set[str] = set()
    for seed in range(8):
        signal, timeline, *_ = compose_call(bank, duration_s=120.0, seed=seed)
        for e in timeline:
            if e.is_speech:
                assert e.emotion and e.actor > 0
                continue
            seen.add(e.kind)
            assert e.role in channel_of[e.kind] and e.emotion == "" and e.actor == 0
            # the event is audible on its channel: its span is far above the digital silence
            span = signal[("agent", "customer").index(e.role),
                          int(e.start_s * 8000):int(e.end_s * 8000)]
            assert np.sqrt(np.mean(span ** 2)) > 1e-3, e
        # the IVR and ring-back come before the agent's greeting
        first_agent = min(e.start_s for e in speech_events(timeline, role="agent"))
        assert all(e.end_s <= first_agent for e in timeline if e.kind in ("ringback", "ivr"))
    assert seen == set(NONSPEECH_KINDS)


def test_nonspeech_off_gives_speech_only_calls(bank: ClipBank) -> None:
    quiet = CallGenConfig(nonspeech=0.0)
    _, timeline, *_ = compose_call(bank, duration_s=120.0, seed=3, config=quiet)
    assert timeline and all(e.is_speech for e in timeline)
    _, noisy, *_ = compose_call(bank, duration_s=120.0, seed=3)
    assert any(not e.is_speech for e in noisy)
    # the same seed gives the same conversation (scenario, speakers, clips), non-speech or not
    assert [(e.role, e.emotion, e.clip) for e in speech_events(noisy)][:3] == [
        (e.role, e.emotion, e.clip) for e in timeline][:3]
    with pytest.raises(ValueError, match="nonspeech"):
        CallGenConfig(nonspeech=3.0)


def test_nonspeech_generation_is_deterministic_per_seed(bank: ClipBank) -> None:
    a, ta, *_ = compose_call(bank, duration_s=90.0, seed=21)
    b, tb, *_ = compose_call(bank, duration_s=90.0, seed=21)
    _, tc, *_ = compose_call(bank, duration_s=90.0, seed=22)
    assert np.array_equal(a, b) and ta == tb
    assert ta != tc
    rng = np.random.default_rng
    assert np.array_equal(hold_music(3.0, 8000, rng=rng(1)), hold_music(3.0, 8000, rng=rng(1)))
    assert not np.array_equal(hold_music(3.0, 8000, rng=rng(1)),
                              hold_music(3.0, 8000, rng=rng(2)))
    assert np.array_equal(babble(bank, 4.0, rng=rng(5), talkers=5),
                          babble(bank, 4.0, rng=rng(5), talkers=5))


def test_signalling_tones_have_the_standard_frequencies() -> None:
    sr = 8000
    tone = dtmf_sequence("1", sr, rng=np.random.default_rng(0), level_dbfs=-16.0)
    spectrum = np.abs(np.fft.rfft(tone, n=8 * sr))
    freqs = np.fft.rfftfreq(8 * sr, 1 / sr)
    top = sorted(freqs[np.argsort(spectrum)[-200:]])
    assert any(abs(f - 697) < 3 for f in top) and any(abs(f - 1209) < 3 for f in top)
    assert 20 * np.log10(np.sqrt(np.mean(tone ** 2))) == pytest.approx(-16.0, abs=0.1)
    ring = ringback_tone(sr, style="us", cycles=2)
    assert len(ring) == round((2.0 + 4.0 + 2.0) * sr)  # ring, pause, ring
    assert np.abs(ring[round(3.0 * sr):round(5.0 * sr)]).max() == 0.0


def test_timeline_round_trip_and_old_format(tmp_path: Path) -> None:
    events = [TimelineEvent("agent", 0.5, 2.25, "calm", 3, "03-01-02-01-01-01-03"),
              TimelineEvent("agent", 3.0, 9.5, "", 0, "hold:music", "hold"),
              TimelineEvent("customer", 10.0, 11.2, "", 0, "dtmf:1234", "dtmf")]
    path = tmp_path / "t.timeline.csv"
    write_timeline(path, events)
    assert read_timeline(path) == events
    with path.open() as handle:
        assert next(csv.reader(handle)) == ["role", "start_s", "end_s", "emotion", "actor",
                                            "clip", "kind"]
    old = tmp_path / "old.timeline.csv"  # written before non-speech existed: six columns
    old.write_text("role,start_s,end_s,emotion,actor,clip\n"
                   "agent,0.500,2.250,calm,3,03-01-02-01-01-01-03\n"
                   "customer,2.400,4.000,angry,4,03-01-05-01-01-01-04\n")
    loaded = read_timeline(old)
    assert [e.kind for e in loaded] == ["speech", "speech"] and loaded[0] == events[0]
    bad = tmp_path / "bad.timeline.csv"
    bad.write_text("role,start_s,end_s,emotion,actor,clip,kind\nagent,0,1,,0,x,jingle\n")
    with pytest.raises(ValueError, match="unknown kind 'jingle'"):
        read_timeline(bad)
    bad.write_text("who,when\nagent,0\n")
    with pytest.raises(ValueError, match="not a call timeline"):
        read_timeline(bad)


def test_calls_have_pauses_and_overtalk(bank: ClipBank) -> None:
    config = CallGenConfig(overlap_probability=0.6)
    _, timeline, _, agent, customer = compose_call(bank, duration_s=60.0, seed=1, config=config)
    timeline = speech_events(timeline)
    assert agent != customer
    agent_spans = [(e.start_s, e.end_s) for e in timeline if e.role == "agent"]
    overlap = sum(max(0.0, min(e.end_s, b) - max(e.start_s, a))
                  for e in timeline if e.role == "customer" for a, b in agent_spans)
    assert overlap > 0.3
    starts = sorted((e.start_s, e.end_s) for e in timeline)
    gaps = [s2 - e1 for (_, e1), (s2, _) in itertools.pairwise(starts)]
    assert max(gaps) >= 0.2  # pauses between turns


def test_telephone_line_is_narrowband_and_mulaw(bank: ClipBank) -> None:
    rng = np.random.default_rng(0)
    wide = rng.standard_normal(16000).astype(np.float32) * 0.1
    line = telephone_line(wide, 8000, seed=0)
    spectrum = np.abs(np.fft.rfft(line)) ** 2
    freqs = np.fft.rfftfreq(len(line), 1 / 8000)
    assert spectrum[freqs > 3600].sum() < 0.01 * spectrum.sum()
    assert spectrum[freqs < 200].sum() < 0.01 * spectrum.sum()
    # the training copies' G.711: 256 levels at most
    assert len(np.unique(np.round(line, 9))) <= 256


def test_clip_bank_reads_ravdess_names(tmp_path: Path) -> None:
    write_ravdess_corpus(tmp_path, actors=[3, 4], emotions=("neutral", "angry"), duration_s=1.0)
    (tmp_path / "Actor_03" / "not-a-ravdess-name.wav").write_bytes(b"RIFF")
    bank = ClipBank.from_folder(tmp_path, actors=[4])
    assert bank.actors == [4]
    assert bank.emotions == ["angry", "neutral"]
    assert bank.sr == 8000 and all(c.signal.dtype == np.float32 for c in bank.clips)
    with pytest.raises(ValueError, match="no labelled clips"):
        ClipBank.from_folder(tmp_path, actors=[99])


def test_clip_bank_from_paths_is_the_folder_bank(tmp_path: Path) -> None:
    files = write_ravdess_corpus(tmp_path, actors=[3, 4], emotions=("neutral", "angry"),
                                 duration_s=1.0)
    folder = ClipBank.from_folder(tmp_path)
    sources = [(f.stem, int(f.stem[-2:]), {"01": "neutral", "05": "angry"}[f.stem[6:8]], f)
               for f in sorted(files)]
    listed = ClipBank.from_paths(sources)
    assert [c.name for c in listed.clips] == [c.name for c in folder.clips]
    for a, b in zip(listed.clips, folder.clips, strict=True):
        np.testing.assert_array_equal(a.signal, b.signal)
    # an unreadable file is skipped, not fatal
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"nope")
    assert len(ClipBank.from_paths([*sources, ("broken", 3, "angry", broken)]).clips) == len(
        sources)


def test_a_missing_emotion_takes_a_clip_of_its_polarity(tmp_path: Path) -> None:
    """A corpus without calm or disgust clips still makes every scenario; the timeline names
    the clip's own emotion, so the truth follows what was really said."""
    bank = ClipBank.synthetic(actors=range(1, 4), per_emotion=1,
                              emotions=("neutral", "happy", "angry", "sad"))
    for scenario in SCENARIOS:
        _, timeline, *_ = compose_call(bank, duration_s=40.0, seed=3, scenario=scenario)
        said = {e.emotion for e in speech_events(timeline)}
        assert said <= {"neutral", "happy", "angry", "sad"}
    with pytest.raises(ValueError, match="polarity"):
        ClipBank.synthetic(actors=[1], per_emotion=1, emotions=("neutral",)).pick(
            np.random.default_rng(0), actor=1, emotion="angry")


def test_truth_is_the_customers_negative_speech_share() -> None:
    def utt(role: str, start: float, end: float, emotion: str, kind: str = "speech"
            ) -> TimelineEvent:
        return TimelineEvent(role, start, end, emotion, 1, "c", kind)

    timeline = [utt("customer", 0, 3, "angry"), utt("customer", 4, 6, "calm"),
                utt("agent", 6, 20, "angry"), utt("customer", 20, 30, "", kind="dtmf")]
    assert customer_negative_share(timeline) == pytest.approx(0.6)
    assert truly_escalated(timeline)
    assert not truly_escalated([*timeline, utt("customer", 30, 32, "sad"),
                                utt("customer", 32, 38, "happy")])  # 5 of 13 s negative
    assert customer_negative_share([utt("agent", 0, 2, "angry")]) == 0.0


def test_cli_generate(tmp_path: Path) -> None:
    from ser.cli import app

    result = CliRunner().invoke(app, ["calls", "generate", str(tmp_path / "out"), "--n-calls", "2",
                                      "--minutes", "0.2", "--source", "synth", "--actors", "1-3"])
    assert result.exit_code == 0, result.output
    assert "2 calls" in result.output
    assert len(list((tmp_path / "out").glob("*.wav"))) == 2
    bad = CliRunner().invoke(app, ["calls", "generate", str(tmp_path / "x"), "--source",
                                   str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "not a folder" in bad.output
