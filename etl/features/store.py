"""Feature vectors in PostgreSQL: feature set versions, pending clips, bulk writes, reads.

``feature_sets`` holds each set's identity (name, channel, params hash) and ordered feature
names; ``clip_features`` one ``real[]`` per (clip, set, segment); ``feature_errors`` the reason
a clip has no vector. Functions here never commit; callers own transactions.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import FeatureError, FeatureSet
from etl.features.specs import ClipResult, FeatureSpec


def ensure_feature_set(session: Session, spec: FeatureSpec) -> int:
    """``feature_sets.id`` of ``spec``, creating the next version if its params are new."""
    def lookup() -> int | None:
        return session.scalar(select(FeatureSet.id).where(
            FeatureSet.name == spec.name, FeatureSet.channel == spec.channel,
            FeatureSet.params_hash == spec.params_hash))

    existing = lookup()
    if existing is not None:
        return existing
    version = (session.scalar(select(func.max(FeatureSet.version)).where(
        FeatureSet.name == spec.name, FeatureSet.channel == spec.channel)) or 0) + 1
    session.execute(pg_insert(FeatureSet).values(
        name=spec.name, channel=spec.channel, version=version,
        feature_names=list(spec.feature_names),
        params={**spec.params, "sample_rate": spec.sample_rate},
        params_hash=spec.params_hash).on_conflict_do_nothing())
    created = lookup()
    if created is None:  # a concurrent writer took this version number with other params
        raise RuntimeError(f"could not register feature set {spec.name}/{spec.channel}; retry")
    return created


_PENDING_SQL = """
SELECT c.id, c.path FROM clips c
WHERE c.is_current AND c.id > :after AND (CAST(:corpus AS text) IS NULL OR c.corpus = :corpus)
  AND NOT EXISTS (SELECT 1 FROM clip_features f WHERE f.clip_id = c.id
                  AND f.feature_set_id = :fs AND f.seg_start_s = 0 AND f.seg_end_s = -1)
  AND NOT EXISTS (SELECT 1 FROM feature_errors e WHERE e.clip_id = c.id AND e.feature_set_id = :fs)
ORDER BY c.id LIMIT :limit
"""


def pending_clips(session: Session, *, feature_set_id: int, corpus: str | None = None,
                  after_id: int = 0, limit: int = 1000) -> list[tuple[int, str]]:
    """Next ``limit`` current clips (id > ``after_id``) with neither features nor an error.

    Keyset pagination: callers stream chunks without holding every clip in memory.
    """
    rows = session.execute(text(_PENDING_SQL), {"after": after_id, "corpus": corpus,
                                                "fs": feature_set_id, "limit": limit})
    return [(int(r[0]), str(r[1])) for r in rows]


def count_pending(session: Session, *, feature_set_id: int, corpus: str | None = None) -> int:
    sql = f"SELECT count(*) FROM ({_PENDING_SQL.replace('LIMIT :limit', '')}) AS pending"
    return int(session.scalar(text(sql), {"after": 0, "corpus": corpus, "fs": feature_set_id}) or 0)


_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_PGCOPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_FLOAT4_OID = 700
WHOLE_CLIP = (0.0, -1.0)  # (seg_start_s, seg_end_s) of a whole-clip row


def binary_copy_rows(clip_ids: Sequence[int], vectors: np.ndarray,
                     bounds: np.ndarray | None = None, variants: np.ndarray | None = None
                     ) -> bytes:
    """``COPY ... (integer, float8, float8, integer, real[]) FROM STDIN WITH (FORMAT binary)``.

    Rows are ``(clip_id, seg_start_s, seg_end_s, variant, values)``; ``bounds`` float
    ``(n, 2)`` defaults to whole-clip rows, ``variants`` int ``(n,)`` to 0 (as recorded). Every row has the same array length, so the whole payload is
    one numpy structured array: no per-value text formatting in Python and no float parsing in
    the server (both were the cost of the text format), and float32 values arrive bit for bit.
    """
    n_rows, n_values = vectors.shape
    row = np.dtype([("n_fields", ">i2"), ("id_len", ">i4"), ("clip_id", ">i4"),
                    ("start_len", ">i4"), ("start", ">f8"), ("end_len", ">i4"), ("end", ">f8"),
                    ("variant_len", ">i4"), ("variant", ">i4"), ("array_len", ">i4"), ("ndim", ">i4"), ("has_null", ">i4"),
                    ("element_oid", ">u4"), ("dim", ">i4"), ("lower_bound", ">i4"),
                    ("values", [("len", ">i4"), ("value", ">f4")], (n_values,))])
    rows = np.zeros(n_rows, dtype=row)
    rows["n_fields"] = 5
    rows["id_len"] = 4
    rows["clip_id"] = np.asarray(clip_ids, dtype=np.int64)
    rows["start_len"] = rows["end_len"] = 8
    seg = np.broadcast_to(WHOLE_CLIP if bounds is None else bounds, (n_rows, 2))
    rows["start"], rows["end"] = seg[:, 0], seg[:, 1]
    rows["variant_len"] = 4
    rows["variant"] = 0 if variants is None else np.asarray(variants, dtype=np.int64)
    rows["array_len"] = 20 + 8 * n_values  # ndim .. lower_bound, then (len, value) pairs
    rows["ndim"] = 1
    rows["element_oid"] = _FLOAT4_OID
    rows["dim"] = n_values
    rows["lower_bound"] = 1
    rows["values"]["len"] = 4
    rows["values"]["value"] = vectors
    return _PGCOPY_HEADER + rows.tobytes() + _PGCOPY_TRAILER


class StoreCounts(NamedTuple):
    """Rows `store_results` actually inserted: whole-clip vectors, errors, segment vectors."""

    stored: int
    errors: int
    segments: int = 0


def _check_vector(clip_id: int, values: np.ndarray, n_expected: int) -> None:
    if values.shape[-1] != n_expected:
        raise ValueError(f"clip {clip_id}: {values.shape[-1]} values, the feature set has "
                         f"{n_expected} names")
    if not np.isfinite(values).all():
        raise ValueError(f"clip {clip_id}: refusing to store non-finite features")


def store_results(session: Session, *, feature_set_id: int,
                  results: Sequence[ClipResult]) -> StoreCounts:
    """Bulk-write whole-clip vectors, the segment vectors of long clips, the augmented copies
    of clips of an augmented set (variants 1..n; COPY into a temp table, then INSERT .. ON
    CONFLICT DO NOTHING) and error reasons. Idempotent. ``stored`` counts clips.

    Raises
    ------
    ValueError
        a vector with NaN/inf (never stored) or of the wrong length.
    """
    good = [r for r in results if r.values is not None]
    bad = [r for r in results if r.values is None]
    stored = errors = segments = 0
    if good:
        n_expected = int(session.scalar(select(func.cardinality(FeatureSet.feature_names)).where(
            FeatureSet.id == feature_set_id)) or 0)
        payload = _vector_rows(good, n_expected=n_expected)
        stored, segments = _insert_vector_rows(session, feature_set_id=feature_set_id,
                                               payload=payload)
    if bad:
        errors = len(session.execute(
            pg_insert(FeatureError).on_conflict_do_nothing().returning(FeatureError.clip_id),
            [{"clip_id": r.clip_id, "feature_set_id": feature_set_id, "reason": r.reason or "unknown"}
             for r in bad]).all())
    return StoreCounts(int(stored), int(errors), int(segments))


def _vector_rows(good: Sequence[ClipResult], *, n_expected: int) -> bytes:
    """The rows of ``good`` (results with values) as a binary COPY payload
    (:func:`binary_copy_rows`): whole-clip rows first, then the augmented copies and the
    segment rows of each clip. Every vector is checked first (:func:`_check_vector`)."""
    plain = [r for r in good if r.variants is None]
    ids = [np.array([r.clip_id for r in plain], dtype=np.int64)]
    vectors = [np.stack([r.values for r in plain if r.values is not None]) if plain
               else np.zeros((0, n_expected), np.float32)]
    bounds = [np.tile(WHOLE_CLIP, (len(plain), 1))]
    variant = [np.zeros(len(plain), dtype=np.int64)]
    for r in good:
        assert r.values is not None
        _check_vector(r.clip_id, r.values, n_expected)
        if r.variants is not None:
            _check_vector(r.clip_id, r.variants, n_expected)
            ids.append(np.full(len(r.variants), r.clip_id))
            vectors.append(r.variants)
            bounds.append(np.tile(WHOLE_CLIP, (len(r.variants), 1)))
            variant.append(np.arange(1, len(r.variants) + 1))
        if r.segments is not None and r.segment_values is not None and len(r.segments):
            _check_vector(r.clip_id, r.segment_values, n_expected)
            ids.append(np.full(len(r.segments), r.clip_id))
            vectors.append(r.segment_values)
            bounds.append(r.segments)
            variant.append(np.zeros(len(r.segments), dtype=np.int64))
    return binary_copy_rows(np.concatenate(ids),
                            np.concatenate(vectors).astype(np.float32, copy=False),
                            np.concatenate(bounds), np.concatenate(variant))


def _insert_vector_rows(session: Session, *, feature_set_id: int,
                        payload: bytes) -> tuple[int, int]:
    """COPY ``payload`` into a temp table, then insert the rows ``clip_features`` lacks;
    ``(clips with a new whole-clip row, new segment rows)``."""
    session.execute(text(
        "CREATE TEMP TABLE IF NOT EXISTS _feature_rows_v (clip_id integer, "
        "seg_start_s double precision, seg_end_s double precision, variant integer, "
        "vals real[]) ON COMMIT DELETE ROWS"))
    session.execute(text("TRUNCATE _feature_rows_v"))
    dbapi = session.connection().connection.dbapi_connection
    assert dbapi is not None
    with dbapi.cursor() as cur:
        cur.copy_expert("COPY _feature_rows_v (clip_id, seg_start_s, seg_end_s, variant, "
                        "vals) FROM STDIN WITH (FORMAT binary)", io.BytesIO(payload))
    inserted = session.execute(text(
        "INSERT INTO clip_features (clip_id, feature_set_id, seg_start_s, seg_end_s, "
        "variant, values) SELECT clip_id, :fs, seg_start_s, seg_end_s, variant, vals "
        "FROM _feature_rows_v ON CONFLICT DO NOTHING RETURNING clip_id, seg_end_s = -1"),
        {"fs": feature_set_id}).all()
    stored = len({int(c) for c, whole in inserted if whole})
    segments = sum(1 for _, whole in inserted if not whole)
    return stored, segments


def clear_errors(session: Session, *, feature_set_id: int, corpus: str | None = None) -> int:
    """Forget recorded errors so those clips are tried again. Returns rows deleted."""
    return int(session.execute(text(
        "DELETE FROM feature_errors e USING clips c WHERE e.clip_id = c.id "
        "AND e.feature_set_id = :fs AND (CAST(:corpus AS text) IS NULL OR c.corpus = :corpus)"),
        {"fs": feature_set_id, "corpus": corpus}).rowcount or 0)


def load_feature_matrix(
    session: Session,
    *,
    feature_set_id: int,
    clip_ids: Sequence[int] | None = None,
    corpus: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-clip feature rows (as recorded: variant 0) of current clips, ordered by clip id.

    Returns
    -------
    clip_ids : int64 ``(n,)``; X : float32 ``(n, n_features)``
    """
    ids, _, X = load_variant_matrix(session, feature_set_id=feature_set_id, clip_ids=clip_ids,
                                    corpus=corpus, variants="recorded")
    return ids, X


def load_variant_matrix(
    session: Session,
    *,
    feature_set_id: int,
    clip_ids: Sequence[int] | None = None,
    corpus: str | None = None,
    variants: str = "all",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-clip rows of current clips with their variant, ordered by (clip id, variant).

    ``variants``: "recorded" (variant 0 only), "augmented" (1..n) or "all".

    Returns
    -------
    clip_ids : int64 ``(n,)``; variant : int64 ``(n,)``; X : float32 ``(n, n_features)``
    """
    where = {"recorded": " AND f.variant = 0", "augmented": " AND f.variant > 0", "all": ""}
    if variants not in where:
        raise ValueError(f"variants must be one of {', '.join(where)}, not {variants!r}")
    sql = ("SELECT f.clip_id, f.variant, f.values FROM clip_features f "
           "JOIN clips c ON c.id = f.clip_id "
           "WHERE f.feature_set_id = :fs AND f.seg_start_s = 0 AND f.seg_end_s = -1 "
           "AND c.is_current AND (CAST(:corpus AS text) IS NULL OR c.corpus = :corpus)"
           + where[variants])
    params: dict[str, Any] = {"fs": feature_set_id, "corpus": corpus}
    if clip_ids is not None:
        sql += " AND f.clip_id = ANY(:ids)"
        params["ids"] = [int(c) for c in clip_ids]
    rows = session.execute(text(sql + " ORDER BY f.clip_id, f.variant"), params).all()
    n_feat = session.scalar(select(func.cardinality(FeatureSet.feature_names)).where(
        FeatureSet.id == feature_set_id))
    if n_feat is None:
        raise ValueError(f"no feature set with id {feature_set_id}")
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    variant = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    X = np.array([r[2] for r in rows], dtype=np.float32).reshape(len(rows), int(n_feat))
    return ids, variant, X
