"""Ingest against PostgreSQL: content identity, versions, bad input, CSVs, the CLI and the flow."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, SessionTransaction
from typer.testing import CliRunner

from db.models import Actor, Clip, IngestError, IngestRun, LabelVote
from etl.corpora.cremad_demographics import load_demographics
from etl.corpora.cremad_votes import load_votes
from etl.corpora.ingest import (
    check_folder,
    finish_run,
    folder_candidates,
    ingest_folder,
    iter_ingest_chunks,
    start_run,
)
from etl.corpora.ingest_run import IngestCounts, IngestInputError
from etl.corpora.manifest import load_manifest
from etl.synthetic.corpora import (
    write_bad_files,
    write_clip,
    write_cremad_demographics,
    write_cremad_fixture,
    write_cremad_votes,
    write_emodb_fixture,
    write_manifest,
    write_ravdess_fixture,
    write_savee_fixture,
    write_tess_fixture,
)

N_RAVDESS = 28  # write_ravdess_fixture defaults: 2 actors x 7 emotion/intensity x 2 statements


@pytest.fixture(scope="module")
def ravdess_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ravdess")
    write_ravdess_fixture(root)
    return root


def _ingest(session: Session, corpus: str, root: Path, **kwargs: object) -> IngestCounts:
    """Like the flow: run row, chunk-committed ingest, final counts (each its own transaction)."""
    if session.in_transaction():  # a test's earlier SELECT autobegan one
        session.commit()
    with session.begin():
        run_id = start_run(session, corpus=corpus, path=str(root))
    progress = kwargs.pop("progress", None)
    counts = IngestCounts()
    for done in iter_ingest_chunks(session, corpus=corpus,
                                   candidates=folder_candidates(corpus, check_folder(root)),
                                   run_id=run_id, label_source=f"filename:{corpus}",
                                   **kwargs):  # type: ignore[arg-type]
        session.commit()  # the caller owns transactions: one per chunk, as in the flow
        counts = done.counts
        if progress is not None:
            progress(done.files)  # type: ignore[operator]
    with session.begin():
        finish_run(session, run_id=run_id, counts=counts)
    return counts


def _begin(session: Session) -> SessionTransaction:
    """A fresh transaction (ending one a test's earlier SELECT autobegan)."""
    if session.in_transaction():
        session.commit()
    return session.begin()


def _n_clips(session: Session, corpus: str, *, current_only: bool = True) -> int:
    query = select(func.count()).select_from(Clip).where(Clip.corpus == corpus)
    if current_only:
        query = query.where(Clip.is_current)
    return int(session.scalar(query) or 0)


# ---- folders -------------------------------------------------------------------------------

def test_ravdess_lands_and_bad_files_are_recorded(db_session: Session, tmp_path: Path) -> None:
    root = tmp_path / "ravdess"
    shutil.copytree(_fixture_copy_source(tmp_path), root)
    bad = write_bad_files(root / "Actor_99")
    song = write_clip(root / "Actor_03" / "03-02-03-01-01-01-03.wav")  # vocal channel 02 = song
    misnamed = write_clip(root / "Actor_03" / "recording.wav")

    counts = _ingest(db_session, "ravdess", root, chunk_size=10, workers=2)

    assert (counts.files_seen, counts.added, counts.failed) == (N_RAVDESS + 5, N_RAVDESS, 5)
    assert counts.actors_added == 2
    errors = dict(db_session.execute(select(IngestError.path, IngestError.reason)).tuples().all())
    assert errors[str(bad["empty"])] == "empty file (0 bytes)"
    assert errors[str(bad["corrupt"])].startswith("not readable audio")
    assert errors[str(bad["text"])] == "not an audio file (.txt)"
    assert errors[str(song)].startswith("not an audio-only speech clip")
    assert "RAVDESS" in errors[str(misnamed)]
    run = db_session.scalars(select(IngestRun)).one()
    assert (run.status, run.added, run.failed, run.actors_added) == ("succeeded", N_RAVDESS, 5, 2)

    actors = dict(db_session.execute(select(Actor.actor_code, Actor.sex)).tuples().all())
    assert actors == {"01": "male", "02": "female"}
    clip = db_session.scalars(select(Clip).where(Clip.clip_name == "03-01-05-02-01-01-02")).one()
    assert (clip.emotion, clip.intensity, clip.label_source) == ("angry", "strong",
                                                                "filename:ravdess")
    assert (clip.sample_rate, clip.channels, clip.frames) == (16000, 1, 4800)
    assert clip.duration_s == pytest.approx(0.3) and len(clip.sha256) == 64
    assert clip.actor_id == db_session.scalar(select(Actor.id).where(Actor.actor_code == "02"))


def _fixture_copy_source(tmp_path: Path) -> Path:
    source = tmp_path / "_source"
    if not source.exists():
        write_ravdess_fixture(source)
    return source


def test_reingest_adds_nothing(db_session: Session, ravdess_dir: Path) -> None:
    first = _ingest(db_session, "ravdess", ravdess_dir)
    second = _ingest(db_session, "ravdess", ravdess_dir)
    assert (first.added, second.added, second.skipped, second.actors_added) == (
        N_RAVDESS, 0, N_RAVDESS, 0)
    assert _n_clips(db_session, "ravdess", current_only=False) == N_RAVDESS
    runs = db_session.execute(select(IngestRun.added, IngestRun.skipped)
                              .order_by(IngestRun.id)).tuples().all()
    assert runs == [(N_RAVDESS, 0), (0, N_RAVDESS)]


def test_a_folder_of_links_to_actor_folders_is_followed_without_looping(
        db_session: Session, ravdess_dir: Path, tmp_path: Path) -> None:
    links = tmp_path / "picked"
    links.mkdir()
    actors = sorted(p for p in ravdess_dir.iterdir() if p.is_dir())
    for actor in actors:
        (links / actor.name).symlink_to(actor.resolve(), target_is_directory=True)
    # a link back up the tree must not loop
    (links / "loop").symlink_to(links, target_is_directory=True)
    counts = _ingest(db_session, "ravdess", links)
    assert counts.added == N_RAVDESS  # every clip once, through the links
    assert _n_clips(db_session, "ravdess", current_only=False) == N_RAVDESS


def test_changed_content_is_a_new_version(db_session: Session, tmp_path: Path) -> None:
    root = tmp_path / "rav"
    paths = write_ravdess_fixture(root, actors=[1], emotions=("sad",))
    _ingest(db_session, "ravdess", root)
    target = paths[0]
    original = target.read_bytes()
    write_clip(target, emotion="sad", seed=12345)  # same name, different bytes

    counts = _ingest(db_session, "ravdess", root)
    assert (counts.added, counts.new_versions, counts.skipped) == (1, 1, len(paths) - 1)
    rows = db_session.execute(select(Clip.version, Clip.is_current)
                              .where(Clip.path == str(target.resolve()))
                              .order_by(Clip.version)).tuples().all()
    assert rows == [(1, False), (2, True)]
    assert _n_clips(db_session, "ravdess") == len(paths)

    target.write_bytes(original)  # reverted: the first version becomes current again
    counts = _ingest(db_session, "ravdess", root)
    assert counts.added == 0
    rows = db_session.execute(select(Clip.version, Clip.is_current)
                              .where(Clip.path == str(target.resolve()))
                              .order_by(Clip.version)).tuples().all()
    assert rows == [(1, True), (2, False)]


def test_identical_files_are_one_clip_and_reported(db_session: Session, tmp_path: Path) -> None:
    root = tmp_path / "rav"
    paths = write_ravdess_fixture(root, actors=[1], emotions=("happy",))
    copy = paths[0].with_name("03-01-03-01-01-02-01.wav")  # repetition 02, same bytes
    shutil.copyfile(paths[0], copy)
    for _ in range(2):  # reported on every run, never a failure
        counts = _ingest(db_session, "ravdess", root)
        assert (counts.duplicates, counts.failed) == (1, 0)
        assert "same content as" in counts.problems[0].reason
    assert _n_clips(db_session, "ravdess") == len(paths)


def test_interrupted_ingest_keeps_whole_chunks_and_resumes(clean_db: str, engine: Engine,
                                                          ravdess_dir: Path) -> None:
    class Interrupt(Exception):
        pass

    def stop_after_first_chunk(_: int) -> None:
        raise Interrupt

    with Session(engine) as session:
        with pytest.raises(Interrupt):
            _ingest(session, "ravdess", ravdess_dir, chunk_size=10,
                    progress=stop_after_first_chunk)
        assert _n_clips(session, "ravdess") == 10  # the first chunk, committed whole
        counts = _ingest(session, "ravdess", ravdess_dir, chunk_size=10)
        assert (counts.added, counts.skipped) == (N_RAVDESS - 10, 10)


@pytest.mark.parametrize(("corpus", "writer", "n", "emotions", "actors"), [
    ("crema-d", write_cremad_fixture, 12, {"angry", "happy", "neutral"}, {"1001": None}),
    ("tess", write_tess_fixture, 12, {"angry", "pleasant_surprise", "sad"},
     {"OAF": ("female", 64), "YAF": ("female", 26)}),
    ("savee", write_savee_fixture, 16, {"angry", "sad", "surprised", "neutral"},
     {"DC": ("male", None), "JK": ("male", None)}),
    ("emodb", write_emodb_fixture, 12, {"angry", "boredom", "fearful"},
     {"03": ("male", 31), "08": ("female", 34)}),
])
def test_each_corpus_lands(db_session: Session, tmp_path: Path, corpus: str, writer: object,
                          n: int, emotions: set[str], actors: dict[str, object]) -> None:
    writer(tmp_path / corpus)  # type: ignore[operator]
    counts = _ingest(db_session, corpus, tmp_path / corpus)
    assert (counts.added, counts.failed) == (n, 0)
    got = set(db_session.scalars(select(Clip.emotion).where(Clip.corpus == corpus)))
    assert got == emotions
    stored = {a.actor_code: (a.sex, a.age) for a in
              db_session.scalars(select(Actor).where(Actor.corpus == corpus))}
    for code, expected in actors.items():
        assert stored[code] == (expected or (None, None))


def test_savee_speaker_folders(db_session: Session, tmp_path: Path) -> None:
    write_savee_fixture(tmp_path / "AudioData", prefixed=False)
    counts = _ingest(db_session, "savee", tmp_path / "AudioData")
    assert (counts.added, counts.failed) == (16, 0)
    assert set(db_session.scalars(select(Actor.actor_code))) == {"DC", "JK"}


def test_missing_or_empty_folder_is_an_input_error(db_session: Session, tmp_path: Path) -> None:
    with pytest.raises(IngestInputError, match="does not exist"):
        ingest_folder(db_session, corpus="ravdess", root=tmp_path / "nope", run_id=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestInputError, match="no files under"):
        ingest_folder(db_session, corpus="ravdess", root=tmp_path / "empty", run_id=0)


# ---- CSVs ----------------------------------------------------------------------------------

def test_demographics_with_malformed_rows(db_session: Session, tmp_path: Path) -> None:
    csv_path = write_cremad_demographics(tmp_path / "VideoDemographics.csv")
    with _begin(db_session):
        run_id = start_run(db_session, corpus="crema-d", path=None)
        counts = load_demographics(db_session, csv_path=csv_path, run_id=run_id)
        again = load_demographics(db_session, csv_path=csv_path, run_id=run_id)
    assert (counts.actors_added, counts.failed, again.actors_added, again.skipped) == (3, 3, 0, 3)
    rows = {r.row_number: r.reason for r in db_session.scalars(select(IngestError))}
    assert "not a number" in rows[5] and "expected 5 fields" in rows[6]
    assert "unrecognised sex" in rows[7]
    first = db_session.scalars(select(Actor).where(Actor.actor_code == "1001")).one()
    assert (first.sex, first.age, first.race, first.ethnicity) == (
        "male", 20, "Asian", "Not Hispanic")


def test_audio_then_demographics_then_votes(db_session: Session, tmp_path: Path) -> None:
    paths = write_cremad_fixture(tmp_path / "AudioWAV", actors=(1001,), sentences=("DFA",))
    _ingest(db_session, "crema-d", tmp_path / "AudioWAV")
    assert db_session.scalar(select(Actor.sex).where(Actor.actor_code == "1001")) is None
    names = [p.stem for p in paths]
    votes = write_cremad_votes(tmp_path / "tabulatedVotes.csv", [*names, "1001_XXX_ANG_XX"])
    with _begin(db_session):
        run_id = start_run(db_session, corpus="crema-d", path=None)
        load_demographics(db_session, run_id=run_id,
                          csv_path=write_cremad_demographics(tmp_path / "d.csv"))
        counts = load_votes(db_session, csv_path=votes, run_id=run_id)
    assert db_session.scalar(select(Actor.sex).where(Actor.actor_code == "1001")) == "male"
    assert (counts.votes_added, counts.failed) == (3, 2)  # bad name: voice + face rows
    vote = db_session.scalars(select(LabelVote).where(LabelVote.clip_name == names[0])).one()
    assert (vote.num_responses, vote.agreement) == (10, 0.8)
    assert set(vote.votes) >= {"voice", "face", "label_share"}
    confidences = db_session.scalars(select(Clip.label_confidence)).all()
    assert confidences == [pytest.approx(0.8)] * 3


def test_votes_before_audio_set_confidence_at_insert(db_session: Session, tmp_path: Path) -> None:
    votes = write_cremad_votes(tmp_path / "v.csv", ["1002_IEO_SAD_HI"], label_share=0.3)
    with _begin(db_session):
        load_votes(db_session, csv_path=votes,
                   run_id=start_run(db_session, corpus="crema-d", path=None))
    write_clip(tmp_path / "audio" / "1002_IEO_SAD_HI.wav", emotion="sad")
    write_clip(tmp_path / "audio" / "1002_IEO_ANG_HI.wav", emotion="angry")
    _ingest(db_session, "crema-d", tmp_path / "audio")
    got = dict(db_session.execute(select(Clip.clip_name, Clip.label_confidence)).tuples().all())
    assert got == {"1002_IEO_SAD_HI": pytest.approx(0.3), "1002_IEO_ANG_HI": None}


def test_manifest_with_extra_columns_and_bad_rows(db_session: Session, tmp_path: Path) -> None:
    manifest, _audio = write_manifest(tmp_path)
    with _begin(db_session):
        run_id = start_run(db_session, corpus="manifest", path=str(manifest))
    counts = load_manifest(db_session, manifest=manifest, run_id=run_id)
    assert (counts.added, counts.failed, counts.actors_added) == (3, 2, 2)
    clips = {c.clip_name: c for c in db_session.scalars(select(Clip))}
    assert {c.audio_format for c in clips.values()} == {"wav", "flac", "ogg"}
    first = clips["call_0001"]
    assert (first.emotion, first.emotion_code, first.label_source) == ("angry", "Anger",
                                                                       "manifest")
    assert first.extra == {"queue": "billing", "annotator_score": "0.9"}
    agent = db_session.scalars(select(Actor).where(Actor.actor_code == "agent_7")).one()
    assert (agent.sex, agent.age) == ("male", 41)
    rows = {r.row_number: r.reason for r in db_session.scalars(select(IngestError))}
    assert "unknown emotion 'grumpy'" in rows[5] and rows[6] == "file not found"
    again = load_manifest(db_session, manifest=manifest, run_id=run_id)
    assert (again.added, again.skipped) == (0, 3)


def test_manifest_without_required_column(db_session: Session, tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("file,label\na.wav,angry\n")
    with pytest.raises(IngestInputError, match="no 'speaker' column"):
        load_manifest(db_session, manifest=bad, run_id=0)


# ---- CLI -----------------------------------------------------------------------------------

@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["ravdess", "{tmp}/missing"], "path does not exist"),
    (["ravdess", "{tmp}/empty"], "no files under"),
    (["ravdess", "{tmp}/textonly"], "no audio files"),
    (["ravdess"], "PATH is required"),
    (["iemocap", "{tmp}"], "unknown corpus"),
    (["ravdess", "{tmp}/textonly", "--demographics", "{tmp}/textonly/a.txt"], "crema-d"),
    (["crema-d", "--demographics", "{tmp}/missing.csv"], "does not exist"),
    (["manifest", "{tmp}/missing.csv"], "manifest CSV does not exist"),
])
def test_cli_bad_input_exit_2(runner: CliRunner, cli_env: dict[str, str], tmp_path: Path,
                              args: list[str], message: str) -> None:
    from ser.cli import app

    (tmp_path / "empty").mkdir()
    (tmp_path / "textonly").mkdir()
    (tmp_path / "textonly" / "a.txt").write_text("x")
    result = runner.invoke(app, ["ingest", *(a.format(tmp=tmp_path) for a in args)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_cli_runs_the_flow(prefect_harness: None, runner: CliRunner, cli_env: dict[str, str],
                           tmp_path: Path, engine: Engine,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    from ser.cli import app

    for key in ("PREFECT_LOGGING_LEVEL", "PREFECT_HOME"):  # quiet_prefect sets these
        monkeypatch.setenv(key, {"PREFECT_LOGGING_LEVEL": "WARNING"}.get(key, str(tmp_path)))
    monkeypatch.setenv("DO_NOT_TRACK", "")  # recorded, so teardown restores it ...
    monkeypatch.delenv("DO_NOT_TRACK")  # ... after quiet_prefect's default below
    paths = write_cremad_fixture(tmp_path / "AudioWAV", actors=(1001, 1002), sentences=("DFA",))
    write_bad_files(tmp_path / "AudioWAV", names={"corrupt": "1001_IEO_ANG_XX.wav",
                                                  "empty": "1001_IEO_SAD_XX.wav",
                                                  "text": "README.txt"})
    demo = write_cremad_demographics(tmp_path / "VideoDemographics.csv")
    votes = write_cremad_votes(tmp_path / "tabulatedVotes.csv", [p.stem for p in paths])
    args = ["ingest", "crema-d", str(tmp_path / "AudioWAV"), "--demographics", str(demo),
            "--votes", str(votes), "--json"]

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert os.environ["DO_NOT_TRACK"] == "1"  # no Prefect telemetry unless the user asks
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert (report["added"], report["actors_added"], report["votes_added"]) == (6, 3, 6)
    assert report["failed"] == 3 + 3  # corrupt, empty, txt + three malformed CSV rows
    with Session(engine) as session:
        run = session.scalars(select(IngestRun)).one()
        assert (run.status, run.added, run.actors_added, run.failed) == ("succeeded", 6, 3, 6)
        assert session.scalar(select(func.count()).select_from(IngestError)) == 6
        assert session.scalars(select(Clip.label_confidence)).all() == [pytest.approx(0.8)] * 6

    result = runner.invoke(app, ["ingest", "crema-d", str(tmp_path / "AudioWAV")])
    assert result.exit_code == 0, result.output
    assert "0 added" in result.stdout and "6 already present" in result.stdout
    assert "empty file (0 bytes)" in result.stdout


def test_ravdess_file_in_another_actors_folder_is_an_error_not_an_actor(
        db_session: Session, tmp_path: Path) -> None:
    root = tmp_path / "ravdess"
    write_ravdess_fixture(root, actors=[13], emotions=("happy",))
    stray = write_clip(root / "Actor_13" / "03-01-05-02-01-01-99.wav")  # actor 99 in Actor_13

    counts = _ingest(db_session, "ravdess", root)

    assert counts.failed == 1
    errors = dict(db_session.execute(select(IngestError.path, IngestError.reason)).tuples().all())
    assert errors == {str(stray): "name says actor 99 but the file is in folder Actor_13"}
    assert set(db_session.scalars(select(Actor.actor_code))) == {"13"}  # no phantom actor 99
    assert db_session.scalar(select(func.count()).select_from(Clip).where(
        Clip.clip_name == stray.stem)) == 0
