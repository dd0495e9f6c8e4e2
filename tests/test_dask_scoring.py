"""Nightly scoring on a real Dask cluster (``etl.runs.cluster_scoring``): worker *processes*,
never an in-process cluster. The client keeps the database; the workers only read audio.

Every test asserts stored rows: each call scored once with the local path's segment counts
(also with a worker killed mid-batch), and cluster faults (no scheduler, a worker that cannot
see the audio, Dask giving up on a call) failing the run with one line, storing no per-call
error and leaving the calls pending for the next run, while a bad recording fails alone.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import dask
import distributed
import pytest
from distributed import LocalCluster
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from db.engine import session_scope
from db.models import ModelVersion
from etl.runs import pool as pool_module
from etl.runs.batch import run_worker, score_batch
from etl.runs.cluster import ClusterError
from etl.runs.cluster_scoring import score_claims_on_cluster
from etl.runs.inbox import discover_calls
from etl.runs.registration import register_batch
from etl.scoring.config import ScoringConfig
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from etl.training.loading import LoadedModel, load_version
from ser.cli import app
from tests.conftest import truncate_all
from tests.utils.dask_cluster import (
    blind_worker_cluster,
    free_port,
    kill_a_busy_worker,
    when_a_worker_is_busy,
)
from tests.utils.nightly import train_tiny_model

pytestmark = pytest.mark.slow

CONFIG = ScoringConfig(max_duration_s=45.0)
LOCAL_DAY = dt.date(2024, 6, 1)


@pytest.fixture(scope="module")
def model(engine: Engine, bank: ClipBank) -> Iterator[LoadedModel]:
    truncate_all(engine)
    with session_scope(engine) as session:
        version = session.get(ModelVersion, train_tiny_model(session, bank=bank))
        assert version is not None
        loaded = load_version(session, version)
    yield loaded
    truncate_all(engine)


@pytest.fixture(scope="module")
def calls_dir(tmp_path_factory: pytest.TempPathFactory, bank: ClipBank) -> Path:
    folder = tmp_path_factory.mktemp("calls")
    generate_calls(folder, n_calls=6, minutes=0.25, bank=bank, seed=11)
    return folder.resolve()


@pytest.fixture(scope="module")
def local_segments(engine: Engine, model: LoadedModel, calls_dir: Path) -> dict[str, int]:
    """Segments per call from the local path (``score_batch``), the reference."""
    report = score_batch(engine, calls_dir, batch_date=LOCAL_DAY, workers=1, config=CONFIG)
    calls = _calls(engine, report.batch_id)
    assert all(c["status"] == "scored" for c in calls.values()), calls
    return {key: int(c["segments"]) for key, c in calls.items()}  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A scheduler and two worker processes (each with a nanny that restarts it if it dies)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as local:
        yield local


def _register(engine: Engine, folder: Path, day: dt.date, model: LoadedModel) -> int:
    """What ``score_batch`` does before it scores: discover and register the batch."""
    entries = discover_calls(folder, config=CONFIG)
    with session_scope(engine) as session:
        return register_batch(session, source_path=str(folder), batch_date=day,
                              model_version_id=model.model_version_id, entries=entries)


def _calls(engine: Engine, batch_id: int) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.call_key, c.status, c.error, c.claimed_by, "
            "(SELECT count(*) FROM call_segments s WHERE s.call_id = c.id) AS segments "
            "FROM calls c WHERE c.batch_id = :b"), {"b": batch_id}).mappings().all()
    return {r["call_key"]: dict(r) for r in rows}


def _score(engine: Engine, batch_id: int, model: LoadedModel, folder: Path, address: str,
           **kwargs: object) -> list:
    return score_claims_on_cluster(engine, batch_id=batch_id, model=model, address=address,
                                   config=CONFIG, path=folder, **kwargs)  # type: ignore[arg-type]


def _assert_untouched(calls: dict[str, dict[str, object]]) -> None:
    """No per-call error stored, nothing left claimed: the next run takes every call."""
    assert calls and all(c["status"] == "pending" and c["error"] is None
                         and c["claimed_by"] is None for c in calls.values()), calls


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def test_cluster_scores_every_call_once_like_the_local_pool(
        engine: Engine, model: LoadedModel, calls_dir: Path, local_segments: dict[str, int],
        cluster: LocalCluster) -> None:
    batch_id = _register(engine, calls_dir, dt.date(2024, 6, 2), model)
    stats = _score(engine, batch_id, model, calls_dir, cluster.scheduler_address)
    calls = _calls(engine, batch_id)
    assert {k: c["segments"] for k, c in calls.items()} == local_segments
    assert all(c["status"] == "scored" and c["error"] is None for c in calls.values())
    scored = [call_id for s in stats for call_id in s.scored]
    assert len(scored) == len(set(scored)) == len(calls)  # once each
    assert not any(s.failed or s.lost for s in stats)
    assert {s.worker for s in stats} <= set(cluster.scheduler_info["workers"])
    # claims were this client's (one lease), never a worker's: workers have no database
    assert all(str(c["claimed_by"]).startswith("dask:") for c in calls.values())

    # a rerun finds nothing to claim and submits nothing
    assert _score(engine, batch_id, model, calls_dir, cluster.scheduler_address) == []


def test_bad_recording_fails_alone_as_in_the_local_path(
        engine: Engine, model: LoadedModel, bank: ClipBank, cluster: LocalCluster,
        tmp_path: Path) -> None:
    generate_calls(tmp_path, n_calls=2, minutes=0.15, bank=bank, seed=5)
    (tmp_path / "calls.csv").unlink()  # file names are the call keys
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wave file")
    folder = tmp_path.resolve()
    local_id = _register(engine, folder, dt.date(2024, 6, 3), model)
    cluster_id = _register(engine, folder, dt.date(2024, 6, 4), model)
    # gone from the shared storage after discovery: nobody can read it, so it is the call's
    # fault (as in the local path), not the cluster's
    (folder / "call_0002.wav").unlink()

    run_worker(engine, batch_id=local_id, model=model, config=CONFIG, root=folder)
    stats = _score(engine, cluster_id, model, folder, cluster.scheduler_address)

    local, remote = _calls(engine, local_id), _calls(engine, cluster_id)
    assert remote["call_0001"]["status"] == "scored"
    assert remote["call_0002"]["error"] == "file not found: call_0002.wav"
    assert remote["broken"]["status"] == "failed" and remote["broken"]["error"]
    assert {k: (c["status"], c["error"], c["segments"]) for k, c in remote.items()} == {
        k: (c["status"], c["error"], c["segments"]) for k, c in local.items()}
    assert sum(len(s.failed) for s in stats) == 2


def _score_killing_a_busy_worker(engine: Engine, model: LoadedModel, calls_dir: Path,
                                 local_segments: dict[str, int], *, address: str,
                                 day: dt.date) -> None:
    """Score a batch while a worker holding a call is killed; every call must end scored once,
    with the local path's segments."""
    batch_id = _register(engine, calls_dir, day, model)
    with kill_a_busy_worker(address, key_prefix="score-call-") as killed:
        # one call in flight per worker: the killed one held a call that was not written
        stats = _score(engine, batch_id, model, calls_dir, address, max_in_flight=2)
    assert killed, "the worker was not killed while it held a call"
    calls = _calls(engine, batch_id)
    assert {k: c["segments"] for k, c in calls.items()} == local_segments
    assert all(c["status"] == "scored" and c["error"] is None for c in calls.values())
    scored = [call_id for s in stats for call_id in s.scored]
    assert len(scored) == len(set(scored)) == len(calls)


def test_killed_worker_mid_batch_every_call_still_scored_once(
        engine: Engine, model: LoadedModel, calls_dir: Path, local_segments: dict[str, int],
        cluster: LocalCluster) -> None:
    """``kill -9`` of the worker process that holds a call's task: Dask runs the task
    elsewhere (the nanny restarts the worker), and the claims keep every call written once."""
    _score_killing_a_busy_worker(engine, model, calls_dir, local_segments,
                                 address=cluster.scheduler_address, day=dt.date(2024, 6, 5))


def test_the_only_worker_killed_mid_batch_the_model_comes_back_with_its_restart(
        engine: Engine, model: LoadedModel, calls_dir: Path,
        local_segments: dict[str, int]) -> None:
    """With one worker, ``kill -9`` takes every copy of the model with it: the scheduler runs
    the model's task again on the restarted worker (scattered data would be lost for good and
    cancel every call waiting on it)."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as single:
        _score_killing_a_busy_worker(engine, model, calls_dir, local_segments,
                                     address=single.scheduler_address, day=dt.date(2024, 6, 12))


@pytest.mark.parametrize(("environ", "expected"), [
    ({"MALLOC_TRIM_THRESHOLD_": "65536"}, [(-3, 32 * 1024 * 1024)]),  # as Dask's nanny sets it
    ({}, []),  # glibc's adaptive threshold is still on
    ({"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_MMAP_THRESHOLD_": "131072"}, []),  # chosen
])
def test_worker_mmap_threshold_is_raised_once_only_where_the_trim_threshold_froze_it(
        monkeypatch: pytest.MonkeyPatch, environ: dict[str, str],
        expected: list[tuple[int, int]]) -> None:
    calls: list[tuple[int, int]] = []

    class Libc:
        def __init__(self, _name: object) -> None:
            pass

        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(pool_module.ctypes, "CDLL", Libc)
    monkeypatch.setattr(pool_module, "_allocator_set", False)
    pool_module.adaptive_mmap_threshold()
    pool_module.adaptive_mmap_threshold()  # the second task on the worker: nothing again
    assert calls == (expected if sys.platform.startswith("linux") else [])


# --------------------------------------------------------------------------------------------
# Cluster faults are not call faults
# --------------------------------------------------------------------------------------------


def test_unreachable_scheduler_is_one_clear_line_and_stores_nothing(
        engine: Engine, model: LoadedModel, calls_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    batch_id = _register(engine, calls_dir, dt.date(2024, 6, 6), model)
    address = f"tcp://127.0.0.1:{free_port()}"
    timeouts: list[object] = []
    real_client = distributed.Client

    def client(*args: object, timeout: object, **kwargs: object) -> distributed.Client:
        timeouts.append(timeout)
        return real_client(*args, timeout=timeout, **kwargs)

    monkeypatch.setattr(distributed, "Client", client)
    with pytest.raises(ClusterError) as error:
        _score(engine, batch_id, model, calls_dir, address, connect_timeout_s=2.0)
    # one attempt, bounded by the caller's timeout (not CONNECT_TIMEOUT_S): the run gives up
    # when asked to instead of hanging on a scheduler that is not there
    assert timeouts == [2.0]
    message = str(error.value)
    assert "\n" not in message and address in message and "cannot reach" in message
    assert error.value.__suppress_context__  # no chained driver traceback under it
    _assert_untouched(_calls(engine, batch_id))


@pytest.fixture()
def blind_cluster(calls_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A ``dask scheduler`` and one ``dask worker`` process that cannot see the batch folder
    (tests.utils.dask_cluster.blind_worker_cluster: a tmpfs over it in the worker's own mount
    namespace, like a node without the share)."""
    with blind_worker_cluster(calls_dir, tmp_path) as address:
        yield address


def test_worker_that_cannot_read_the_audio_fails_the_run_not_the_calls(
        engine: Engine, model: LoadedModel, calls_dir: Path, local_segments: dict[str, int],
        blind_cluster: str, cluster: LocalCluster) -> None:
    batch_id = _register(engine, calls_dir, dt.date(2024, 6, 7), model)
    with pytest.raises(ClusterError) as error:
        _score(engine, batch_id, model, calls_dir, blind_cluster, connect_timeout_s=60.0)
    message = str(error.value)
    assert "\n" not in message and "cannot read" in message
    assert str(calls_dir) in message  # the path
    assert "127.0.0.1:" in message  # the worker
    _assert_untouched(_calls(engine, batch_id))

    # the calls were released, not failed: a run on workers that see the audio scores them
    _score(engine, batch_id, model, calls_dir, cluster.scheduler_address)
    calls = _calls(engine, batch_id)
    assert {k: c["segments"] for k, c in calls.items()} == local_segments


def test_dask_giving_up_on_a_call_fails_the_run_and_releases_its_claims(
        engine: Engine, model: LoadedModel, calls_dir: Path) -> None:
    """With ``allowed-failures`` 0, one worker death while it holds a call is ``KilledWorker``."""
    batch_id = _register(engine, calls_dir, dt.date(2024, 6, 8), model)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                             dashboard_address=":0")
    with local, kill_a_busy_worker(local.scheduler_address, key_prefix="score-call-") as killed, \
            pytest.raises(ClusterError) as error:
        _score(engine, batch_id, model, calls_dir, local.scheduler_address)
    assert killed
    assert "\n" not in str(error.value) and "KilledWorker" in str(error.value)
    calls = _calls(engine, batch_id)
    assert not any(c["error"] for c in calls.values())  # no call blamed
    assert {c["status"] for c in calls.values()} <= {"scored", "pending"}
    assert not any(c["claimed_by"] for c in calls.values() if c["status"] == "pending")


def test_the_last_worker_gone_for_good_fails_the_run_after_the_bounded_wait(
        engine: Engine, model: LoadedModel, calls_dir: Path) -> None:
    """Its nanny closed too (scaled to zero workers), nothing restarts it: the scheduler would
    keep the calls waiting forever; the run gives up, names the cause and releases them."""
    batch_id = _register(engine, calls_dir, dt.date(2024, 6, 9), model)
    single = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                          dashboard_address=":0")
    with single, _scale_to_zero_when_busy(single) as scaled, \
            pytest.raises(ClusterError) as error:
        _score(engine, batch_id, model, calls_dir, single.scheduler_address,
               max_in_flight=2, no_workers_timeout_s=2.0)
    assert scaled
    message = str(error.value)
    assert "\n" not in message and "has had no workers" in message
    assert single.scheduler_address in message
    calls = _calls(engine, batch_id)
    assert not any(c["error"] for c in calls.values())  # no call blamed
    assert {c["status"] for c in calls.values()} <= {"scored", "pending"}
    assert not any(c["claimed_by"] for c in calls.values() if c["status"] == "pending")


def _scale_to_zero_when_busy(local: LocalCluster) -> AbstractContextManager[list[object]]:
    """Scale ``local`` to no workers (nanny and all) once a worker holds a call's task."""
    return when_a_worker_is_busy(local.scheduler_address, key_prefix="score-call-",
                                 act=lambda *_: local.scale(0) or True)


# --------------------------------------------------------------------------------------------
# Through score_batch and the CLI
# --------------------------------------------------------------------------------------------


def test_score_batch_with_a_dask_address_scores_on_the_cluster(
        engine: Engine, model: LoadedModel, calls_dir: Path, local_segments: dict[str, int],
        cluster: LocalCluster) -> None:
    report = score_batch(engine, calls_dir, batch_date=dt.date(2024, 6, 10), config=CONFIG,
                         dask_address=cluster.scheduler_address)
    assert report.n_scored == report.run_scored == len(local_segments) and not report.n_failed
    calls = _calls(engine, report.batch_id)
    assert {k: c["segments"] for k, c in calls.items()} == local_segments
    assert all(str(c["claimed_by"]).startswith("dask:") for c in calls.values())


def test_ser_score_with_an_unreachable_scheduler_exits_2_with_one_line(
        db_cli: CliRunner, engine: Engine, model: LoadedModel, calls_dir: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    day = dt.date(2024, 6, 11)
    result = db_cli.invoke(app, ["score", str(calls_dir), "--batch-date", day.isoformat(),
                                 "--dask-address", address])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and address in lines[0], lines
    with engine.connect() as conn:
        batch_id = conn.execute(text("SELECT id FROM batches WHERE batch_date = :d"),
                                {"d": day}).scalar_one()
    _assert_untouched(_calls(engine, batch_id))
