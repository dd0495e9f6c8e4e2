"""``ser features`` on a real Dask cluster (``etl.runs.features`` with ``dask_address``): worker
*processes*, never an in-process cluster. The client keeps the database; workers only read audio.

Every test asserts stored rows: the local path's vectors, each clip stored once (also with a
worker killed mid-run), and cluster faults (no scheduler, a worker that cannot see the audio)
failing the run with one line and storing no per-clip error, while a corrupt clip fails alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from distributed import LocalCluster
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from db.engine import session_scope
from etl.corpora.ingest import ingest_folder, start_run
from etl.features.store import load_feature_matrix
from etl.runs.cluster import ClusterError
from etl.runs.features import FeatureRunConfig, run_feature_sets, run_features
from etl.synthetic.corpora import write_cremad_fixture, write_ravdess_fixture
from tests.conftest import truncate_all
from tests.utils.dask_cluster import blind_worker_cluster, free_port, kill_a_busy_worker

pytestmark = pytest.mark.slow

# rich/studio of the RAVDESS fixture: 2 actors x 14 clips of 1 s
RUN = FeatureRunConfig(set_name="rich", channel="studio", corpus="ravdess", workers=1,
                       chunk_size=4)


@pytest.fixture(scope="module")
def corpus(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The RAVDESS fixture ingested (28 clips), its folder resolved (workers see that path)."""
    truncate_all(engine)
    root = tmp_path_factory.mktemp("ravdess").resolve()
    write_ravdess_fixture(root, duration_s=1.0)
    _ingest(engine, "ravdess", root)
    yield root
    truncate_all(engine)


def _ingest(engine: Engine, corpus: str, root: Path) -> None:
    with session_scope(engine) as session:
        counts = ingest_folder(session, corpus=corpus, root=root,
                               run_id=start_run(session, corpus=corpus, path=str(root)),
                               workers=1)
    assert counts.added and not counts.failed


def _forget(engine: Engine) -> None:
    """Every clip pending again (the feature set version stays registered)."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM clip_features"))
        conn.execute(text("DELETE FROM feature_errors"))


def _vectors(engine: Engine, feature_set_id: int) -> dict[int, np.ndarray]:
    with session_scope(engine) as session:
        ids, X = load_feature_matrix(session, feature_set_id=feature_set_id)
    return dict(zip(ids.tolist(), X, strict=True))


def _counts(engine: Engine) -> tuple[int, int, int]:
    """(feature sets, clip_features rows, feature_errors rows)."""
    with engine.connect() as conn:
        return tuple(int(conn.scalar(text(f"SELECT count(*) FROM {t}")) or 0)  # type: ignore[return-value]
                     for t in ("feature_sets", "clip_features", "feature_errors"))


@pytest.fixture(scope="module")
def local(engine: Engine, corpus: Path) -> tuple[int, dict[int, np.ndarray]]:
    """The reference: feature set id and vectors of the local path (one in-process worker)."""
    _forget(engine)
    report = run_features(engine, RUN, progress=False)
    assert (report.pending, report.stored, report.errors) == (28, 28, 0)
    return report.feature_set_id, _vectors(engine, report.feature_set_id)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A scheduler and two worker processes (each with a nanny that restarts it if it dies)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as local_cluster:
        yield local_cluster


def _assert_same_vectors(got: dict[int, np.ndarray], want: dict[int, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for clip_id, vector in want.items():
        np.testing.assert_allclose(got[clip_id], vector, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def test_flow_on_the_cluster_stores_the_local_vectors_with_its_task_in_the_flow_run(
        engine: Engine, local: tuple[int, dict[int, np.ndarray]], cluster: LocalCluster,
        db_cli: CliRunner) -> None:
    """The flow (settings on the test database through ``db_cli``) as ``ser features`` runs it."""
    from prefect import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.features import features_flow

    fs_id, want = local
    _forget(engine)
    with prefect_test_harness(server_startup_timeout=120):
        state = features_flow(RUN, dask_address=cluster.scheduler_address, progress=False,
                              return_state=True)
        report = state.result()
        flow_run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs(limit=100)
        # a rerun has nothing left to do
        assert features_flow(RUN, dask_address=cluster.scheduler_address,
                             progress=False)["pending"] == 0
    assert (report["feature_set_id"], report["pending"], report["stored"],
            report["errors"]) == (fs_id, 28, 28, 0)
    _assert_same_vectors(_vectors(engine, fs_id), want)
    # the run is the flow run's one task; chunks are Dask tasks, not stray Prefect task runs
    ours = [t for t in task_runs if t.flow_run_id == flow_run_id]
    assert [t.name.rsplit("-", 1)[0] for t in ours] == ["extract-features-on-dask"]
    assert all(t.flow_run_id is not None for t in task_runs)


def test_killed_worker_mid_run_every_clip_stored_once(
        engine: Engine, local: tuple[int, dict[int, np.ndarray]],
        cluster: LocalCluster) -> None:
    """``kill -9`` of a worker process holding a chunk: Dask runs the chunk elsewhere (the
    nanny restarts the worker) and the writer stores every clip once."""
    fs_id, want = local
    _forget(engine)
    with kill_a_busy_worker(cluster.scheduler_address, key_prefix="features-chunk-") as killed:
        report = run_features(engine, replace(RUN, chunk_size=1,
                                              dask_address=cluster.scheduler_address),
                              progress=False)
    assert killed, "no worker was killed while it held a chunk"
    assert (report.pending, report.stored, report.errors) == (28, 28, 0)
    _assert_same_vectors(_vectors(engine, fs_id), want)
    with engine.connect() as conn:  # once each: one whole-clip row per clip
        assert conn.scalar(text("SELECT count(*) FROM clip_features")) == 28


def test_corrupt_clip_is_a_per_clip_error_as_in_the_local_path(
        engine: Engine, corpus: Path, cluster: LocalCluster, tmp_path: Path) -> None:
    root = (tmp_path / "crema-d").resolve()
    paths = write_cremad_fixture(root, duration_s=1.0)
    _ingest(engine, "crema-d", root)
    paths[0].write_bytes(b"RIFF not really a wave file")  # corrupted after ingestion
    run = replace(RUN, corpus="crema-d")

    def outcome() -> tuple[dict[int, str], dict[int, np.ndarray]]:
        with engine.connect() as conn:
            errors = dict(conn.execute(text(
                "SELECT e.clip_id, e.reason FROM feature_errors e JOIN clips c "
                "ON c.id = e.clip_id WHERE c.corpus = 'crema-d'")).all())
        vectors = _vectors(engine, fs_id)
        return errors, {k: v for k, v in vectors.items() if k not in corpus_ids}

    with engine.connect() as conn:
        corpus_ids = set(conn.scalars(text("SELECT id FROM clips WHERE corpus = 'ravdess'")))
    fs_id = run_features(engine, run, progress=False).feature_set_id
    local_errors, local_vectors = outcome()
    _forget(engine)
    report = run_features(engine, replace(run, dask_address=cluster.scheduler_address),
                          progress=False)
    errors, vectors = outcome()
    assert (report.pending, report.stored, report.errors) == (len(paths), len(paths) - 1, 1)
    assert len(errors) == 1 and next(iter(errors.values())).startswith("decode")
    assert errors == local_errors
    _assert_same_vectors(vectors, local_vectors)


# --------------------------------------------------------------------------------------------
# Cluster faults are not clip faults
# --------------------------------------------------------------------------------------------


def test_unreachable_scheduler_fails_fast_in_one_line_and_stores_nothing(
        engine: Engine, corpus: Path, database_url: str, tmp_path: Path) -> None:
    """The command as a user runs it (a process, through the Prefect flow)."""
    _forget(engine)
    before = _counts(engine)
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "DATABASE_URL": database_url, "SER_HOME": str(tmp_path / "home"),
           "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("SER_DASK_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "ser", "features", "--set", "seed180",
                           "--dask-address", address], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: cannot reach the Dask scheduler at " + address)
    assert "Traceback" not in proc.stdout
    assert _counts(engine) == before  # not even the seed180 feature set version


def test_worker_that_cannot_read_the_audio_fails_the_run_not_the_clips(
        engine: Engine, corpus: Path, local: tuple[int, dict[int, np.ndarray]],
        cluster: LocalCluster, db_cli: CliRunner, tmp_path: Path) -> None:
    from ser.cli import app

    fs_id, want = local
    _forget(engine)
    with blind_worker_cluster(corpus, tmp_path) as blind:
        with pytest.raises(ClusterError) as error:
            run_feature_sets(engine, replace(RUN, dask_address=blind), progress=False)
        message = str(error.value)
        assert "\n" not in message and "cannot read" in message
        assert str(corpus) in message  # the path
        assert "127.0.0.1:" in message  # the worker
        assert _counts(engine)[1:] == (0, 0)  # no vector, no per-clip error

        # the command: exit code 2 and that one line
        result = db_cli.invoke(app, ["features", "--set", "rich", "--corpus", "ravdess",
                                     "--dask-address", blind, "--no-prefect"])
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1].startswith("error: Dask worker tcp://")
        assert "cannot read " + str(corpus) in result.output
        assert _counts(engine)[1:] == (0, 0)

    # the clips are still pending, not failed: a run on workers that see the audio does them
    report = run_features(engine, replace(RUN, dask_address=cluster.scheduler_address),
                          progress=False)
    assert (report.pending, report.stored, report.errors) == (28, 28, 0)
    _assert_same_vectors(_vectors(engine, fs_id), want)


def test_dask_giving_up_on_a_chunk_fails_the_run_and_blames_no_clip(
        engine: Engine, local: tuple[int, dict[int, np.ndarray]],
        cluster: LocalCluster) -> None:
    """With ``allowed-failures`` 0, one worker death while it holds a chunk is ``KilledWorker``."""
    import dask

    fs_id, want = local
    _forget(engine)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        fragile = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    run = replace(RUN, chunk_size=1, dask_address=fragile.scheduler_address)
    with fragile, kill_a_busy_worker(fragile.scheduler_address,
                                     key_prefix="features-chunk-") as killed, \
            pytest.raises(ClusterError) as error:
        run_features(engine, run, progress=False)
    assert killed
    assert "\n" not in str(error.value) and "KilledWorker" in str(error.value)
    assert _counts(engine)[2] == 0  # no clip blamed
    written = _vectors(engine, fs_id)  # chunks finished before the fault are kept, and right
    _assert_same_vectors(written, {k: want[k] for k in written})
    # what was not written is still pending
    report = run_features(engine, replace(RUN, dask_address=cluster.scheduler_address),
                          progress=False)
    assert report.stored == report.pending == 28 - len(written)
    _assert_same_vectors(_vectors(engine, fs_id), want)
