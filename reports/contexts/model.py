"""The model report's context: training data, speaker-independent scores, confusion, fairness,
feature importance and the comparison with the production model."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from markupsafe import Markup
from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.corpora.demographics import AGE_BAND_LABELS, age_band
from etl.reviews import site_summary
from reports import charts, queries
from reports.common import extra, finite, model_file
from reports.render import fmt_pct

GROUP_TITLES = {"sex": "sex", "age_band": "age band", "race": "race", "ethnicity": "ethnicity"}
# A subgroup UAR this far below the overall UAR is flagged in the model report.
GROUP_GAP_WARNING = 0.10
PER_CLASS_METRICS = ["precision", "recall", "f1", "roc_auc", "support"]
# Features listed in the importance chart.
TOP_FEATURES = 15
# Long ROC curves are thinned to about this many points: the file stays small, the shape stays.
ROC_POINTS = 200

Headline = dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class TrainingData:
    """What the model learned from: per-corpus counts, clips per class, actors' demographics."""

    corpora: list[dict[str, Any]]
    n_clips: int
    n_actors: int
    class_chart: Markup | None
    demo_charts: list[dict[str, Any]]


def _training_point(session: Session, model_version_id: int) -> dict[str, Any] | None:
    """The escalation estimate stored at training time (generated calls of training speakers)."""
    point = session.execute(text(
        "SELECT params -> 'calibration' -> 'operating_point' FROM model_versions WHERE id = :m"),
        {"m": model_version_id}).scalar_one_or_none()
    return point if isinstance(point, dict) else None


def model_context(session: Session, model_version_id: int) -> dict[str, Any]:
    """Everything the model report shows, as template-ready values."""
    ov = queries.model_overview(session, model_version_id)
    metrics = queries.model_metrics(session, model_version_id)
    classes = list(ov["classes"])
    data = training_data(queries.training_clips(session, model_version_id), classes)
    head = headline(metrics)
    uar = head["uar"]
    chance = 1.0 / len(classes) if classes else None
    matrix, cm_labels = confusion(metrics, classes)
    per_class = per_class_table(metrics, classes)
    importance_chart, importance_label = _importance_chart(metrics, ov)
    prod_id = queries.alias_target(session, "production")
    comparison = (_comparison(session, prod_id, ov=ov, head=head, per_class=per_class)
                  if prod_id is not None and prod_id != model_version_id else None)
    diag = metrics[metrics["metric"] == "diagnostic_random_split_uar"]["value"]
    return {
        "site": site_summary(session, model_version_id),
        "training_point": _training_point(session, model_version_id),
        "kind": "model",
        "random_split_uar": finite(diag.iloc[0]) if len(diag) else None,
        "title": f"Model {ov['name']} v{ov['version']}",
        "subtitle": f"{ov['algorithm']} · {ov['label_scheme']} ({len(classes)} classes) · "
                    f"features {ov['feature_set']}/{ov['feature_channel']} v{ov['feature_version']}",
        "generated_at": dt.datetime.now(dt.UTC),
        "ov": ov,
        "classes": classes,
        "head": head,
        "chance": chance,
        "uar": uar,
        "fold_chart": _fold_chart(metrics, chance),
        "corpora": data.corpora,
        "n_clips": data.n_clips,
        "n_actors": data.n_actors,
        "class_chart": data.class_chart,
        "demo_charts": data.demo_charts,
        "confusion_chart": charts.heatmap(matrix, cm_labels, cm_labels) if matrix else None,
        "per_class": per_class.reset_index().to_dict("records") if not per_class.empty else [],
        "per_class_chart": _per_class_chart(per_class),
        "roc_chart": _roc_chart(metrics, classes),
        "groups": groups(metrics, uar["pooled"] if uar["pooled"] is not None else uar["mean"]),
        "importance_chart": importance_chart,
        "importance_label": importance_label,
        "is_production": prod_id == model_version_id,
        "has_production": prod_id is not None,
        "comparison": comparison,
        "params_json": json.dumps(ov.get("params") or {}, sort_keys=True),
        "meta": _meta(ov, uar, model_version_id, is_production=prod_id == model_version_id),
        "legend": charts.legend(charts.class_colors(classes)),
        "root": "",
    }


def _meta(ov: dict[str, Any], uar: dict[str, float | None], model_version_id: int, *,
          is_production: bool) -> dict[str, Any]:
    """What the index lists for this report."""
    return {"kind": "model", "sort": str(ov["created_at"]),
            "summary": f"UAR {fmt_pct(uar['mean'])}"
                       + (f" ± {fmt_pct(uar['std'])}" if uar["std"] is not None else "")
                       + f" over {int(uar['n_folds'] or 0)} speaker folds"
                       + (" · production" if is_production else ""),
            "model_version_id": int(model_version_id)}


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def _plain(metrics: pd.DataFrame) -> pd.DataFrame:
    """Metric rows for the whole model: no speaker group, no class."""
    return metrics[metrics["group_name"].isna() & metrics["class_label"].isna()]


def _pooled(metrics: pd.DataFrame) -> pd.DataFrame:
    """Metric rows over all folds together, for no speaker group."""
    return metrics[metrics["fold"].isna() & metrics["group_name"].isna()]


def headline(metrics: pd.DataFrame) -> Headline:
    """metric -> {pooled, mean, std, n_folds} over speaker-independent folds (no groups/classes)."""
    out: Headline = {}
    plain = _plain(metrics)
    for metric in ("uar", "accuracy", "macro_f1"):
        rows = plain[plain["metric"] == metric]
        folds = rows[rows["fold"].notna()]["value"].astype(float)
        pooled = rows[rows["fold"].isna()]["value"]
        out[metric] = {
            "pooled": finite(pooled.iloc[0]) if len(pooled) else None,
            "mean": float(folds.mean()) if len(folds) else None,
            "std": float(folds.std(ddof=1)) if len(folds) > 1 else None,
            "n_folds": float(len(folds)),
        }
        if out[metric]["mean"] is None:
            out[metric]["mean"] = out[metric]["pooled"]
    # Training stores its own fold mean/std of UAR; use them so every tool quotes one number.
    for name, key in (("uar_mean", "mean"), ("uar_std", "std")):
        stored = plain[(plain["metric"] == name) & plain["fold"].isna()]["value"]
        if len(stored) and finite(stored.iloc[0]) is not None:
            out["uar"][key] = float(stored.iloc[0])
    return out


def _fold_chart(metrics: pd.DataFrame, chance: float | None) -> Markup | None:
    fold_rows = _plain(metrics)
    fold_rows = fold_rows[(fold_rows["metric"] == "uar") & fold_rows["fold"].notna()]
    if not len(fold_rows):
        return None
    return charts.hbar_chart(
        [(f"fold {int(r.fold) + 1}", float(r.value)) for r in fold_rows.itertuples()],
        axis_label="UAR on held-out speakers", max_value=1.0,
        reference=(chance, f"chance {chance:.2f}") if chance else None,
        title="UAR per speaker-independent fold")


def confusion(metrics: pd.DataFrame, classes: Sequence[str]) -> tuple[list[list[float]], list[str]]:
    """The pooled confusion matrix: one row with extra {labels, matrix}, or per-cell rows."""
    rows = _pooled(metrics)
    rows = rows[rows["metric"] == "confusion"]
    for value in rows["extra"]:
        ex = extra(value)
        if "matrix" in ex:
            return ([[float(v) for v in r] for r in ex["matrix"]],
                    [str(x) for x in ex.get("labels", classes)])
    # Alternative layout: one row per cell, class_label = true class, extra.predicted = column.
    cells = [(r.class_label, extra(r.extra).get("predicted"), r.value) for r in rows.itertuples()]
    cells = [c for c in cells if c[0] is not None and c[1] is not None]
    if not cells:
        return [], list(classes)
    labels = list(classes)
    idx = {c: i for i, c in enumerate(labels)}
    m = [[0.0] * len(labels) for _ in labels]
    for true, pred, value in cells:
        if true in idx and pred in idx:
            m[idx[true]][idx[pred]] = float(value)
    return m, labels


def per_class_table(metrics: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """class -> precision, recall, f1, roc_auc, support (NaN when not stored), in class order."""
    rows = _pooled(metrics)
    rows = rows[rows["class_label"].notna() & rows["metric"].isin(PER_CLASS_METRICS)]
    table = rows.pivot_table(index="class_label", columns="metric", values="value", aggfunc="first")
    support = {}
    for r in rows.itertuples():
        n = extra(r.extra).get("support")
        if n is not None:
            support[r.class_label] = n
    table = table.reindex([c for c in classes if c in table.index] +
                          [c for c in table.index if c not in classes])
    if support and "support" not in table.columns:
        table["support"] = [support.get(c) for c in table.index]
    # Every column present (NaN when not stored) so templates need no existence checks.
    return table.reindex(columns=PER_CLASS_METRICS)


def _per_class_chart(per_class: pd.DataFrame) -> Markup | None:
    if per_class.empty or not {"precision", "recall"} <= set(per_class.columns):
        return None
    return charts.grouped_bar_chart(
        list(per_class.index),
        {"precision": list(per_class["precision"]), "recall": list(per_class["recall"])},
        y_label="score (0-1)", colors=["#2f6db5", "#e07b39"],
        title="precision and recall per class")


def roc_series(metrics: pd.DataFrame, classes: Sequence[str]) -> list[charts.Series]:
    """One ROC curve per class (against the rest) from the pooled ``roc_auc`` rows."""
    colors = charts.class_colors(classes)
    series = []
    rows = _pooled(metrics)
    rows = rows[(rows["metric"] == "roc_auc") & rows["class_label"].notna()]
    for r in rows.itertuples():
        ex = extra(r.extra)
        fpr, tpr = ex.get("fpr"), ex.get("tpr")
        if fpr and tpr and len(fpr) == len(tpr):
            step = max(1, len(fpr) // ROC_POINTS)
            xs = [float(v) for v in fpr[::step]] + [float(fpr[-1])]
            ys = [float(v) for v in tpr[::step]] + [float(tpr[-1])]
            series.append(charts.Series(f"{r.class_label} (AUC {float(r.value):.2f})", xs, ys,
                                        colors.get(str(r.class_label), charts.ACCENT)))
    return series


def _roc_chart(metrics: pd.DataFrame, classes: Sequence[str]) -> Markup | None:
    series = roc_series(metrics, classes)
    if not series:
        return None
    return charts.line_chart(
        series, x_label="false-positive rate", y_label="true-positive rate",
        x_range=(0, 1), y_range=(0, 1), diagonal=True, height=320, width=560,
        x_tick_format=lambda v: f"{v:.1f}", y_tick_format=lambda v: f"{v:.1f}",
        title="ROC curves, one class against the rest")


# --------------------------------------------------------------------------------------------
# Features and speaker groups
# --------------------------------------------------------------------------------------------


def importance(metrics: pd.DataFrame, feature_names: Sequence[str]) -> list[tuple[str, float]]:
    """The most important features, largest first, from either importance layout."""
    rows = metrics[metrics["metric"] == "feature_importance"]
    items: list[tuple[str, float]] = []
    for r in rows.itertuples():
        ex = extra(r.extra)
        if "names" in ex and "values" in ex:  # one row holding the whole vector
            items.extend((str(n), float(v)) for n, v in zip(ex["names"], ex["values"], strict=False))
            continue
        name = ex.get("feature") or ex.get("name") or r.class_label or r.group_value
        if name is None and "index" in ex and int(ex["index"]) < len(feature_names):
            name = feature_names[int(ex["index"])]
        if name is not None:
            items.append((str(name), float(r.value)))
    items.sort(key=lambda kv: -kv[1])
    return items[:TOP_FEATURES]


def _importance_chart(metrics: pd.DataFrame, ov: dict[str, Any]) -> tuple[Markup | None, str]:
    """The top-features chart and what its bars measure."""
    items = importance(metrics, list(ov.get("feature_names") or []))
    methods = {extra(e).get("method") for e in
               metrics[metrics["metric"] == "feature_importance"]["extra"]}
    label = ("drop in UAR when the feature is shuffled (held-out speakers)"
             if any(m and "permutation" in str(m) for m in methods) else "importance")
    chart = charts.hbar_chart(items, axis_label=label, fmt=lambda v: f"{v:.3f}", label_width=190,
                              title="top features") if items else None
    return chart, label


def groups(metrics: pd.DataFrame, overall: float | None) -> list[dict[str, Any]]:
    """One UAR chart per speaker grouping (sex, age band, ...), flagging groups far below
    ``overall``."""
    rows = metrics[metrics["group_name"].notna() & (metrics["metric"] == "uar")
                   & metrics["fold"].isna()]
    out = []
    for name in ["sex", "age_band", "race", "ethnicity"] + sorted(
            set(rows["group_name"]) - {"sex", "age_band", "race", "ethnicity"}):
        g = rows[rows["group_name"] == name]
        if not g.empty:
            out.append(_group(g, GROUP_TITLES.get(name, name), overall))
    return out


def _group(g: pd.DataFrame, title: str, overall: float | None) -> dict[str, Any]:
    items = [(str(r.group_value), float(r.value)) for r in g.itertuples()]
    ns = [extra(r.extra).get("n") for r in g.itertuples()]
    labels = [f"{v} (n={n})" if n is not None else v for (v, _), n in zip(items, ns, strict=True)]
    flagged = [v for v, val in items if overall is not None and overall - val > GROUP_GAP_WARNING]
    colors = [charts.ALERT if v in flagged else charts.ACCENT for v, _ in items]
    chart = charts.hbar_chart(list(zip(labels, [v for _, v in items], strict=True)),
                              axis_label="UAR (unweighted average recall)",
                              fmt=lambda v: f"{v:.2f}", colors=colors, max_value=1.0,
                              reference=(overall, f"overall {overall:.2f}")
                              if overall is not None else None, width=500, label_width=140,
                              title=f"UAR by {title}")
    return {"name": title, "chart": chart, "flagged": flagged}


# --------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------


def _age_band(age: Any) -> str:
    return age_band(finite(age)) or "unknown"


def _counts(series: pd.Series) -> list[tuple[str, float]]:
    counts = series.fillna("unknown").astype(str).value_counts()
    return [(str(k), float(v)) for k, v in counts.items()]


def training_data(clips: pd.DataFrame, classes: list[str]) -> TrainingData:
    """Per corpus, per class, and the speakers' demographics (one row per actor)."""
    if not len(clips):
        return TrainingData(corpora=[], n_clips=0, n_actors=0, class_chart=None, demo_charts=[])
    actors = clips.drop_duplicates(["corpus", "actor_code"])
    corpora = (clips.groupby("corpus").agg(clips=("emotion", "size"),
                                           actors=("actor_code", "nunique"),
                                           hours=("duration_s", lambda s: float(s.sum()) / 3600))
               .reset_index().to_dict("records"))
    return TrainingData(corpora=corpora, n_clips=len(clips), n_actors=len(actors),
                        class_chart=_class_chart(clips, classes),
                        demo_charts=_demographic_charts(actors))


def _class_chart(clips: pd.DataFrame, classes: list[str]) -> Markup | None:
    items = _counts(clips["class_label"])
    items.sort(key=lambda kv: classes.index(kv[0]) if kv[0] in classes else 99)
    if not items:
        return None
    return charts.hbar_chart(items, axis_label="training clips", fmt=lambda v: f"{v:.0f}",
                             colors=[charts.color_for(k, i) for i, (k, _) in enumerate(items)],
                             title="training clips per class")


def _demographic_charts(actors: pd.DataFrame) -> list[dict[str, Any]]:
    actors = actors.assign(age_band=actors["age"].map(_age_band))
    out = []
    for column, title in (("sex", "sex"), ("age_band", "age band"), ("race", "race")):
        items = _counts(actors[column])
        if column == "age_band":
            order = [*AGE_BAND_LABELS, "unknown"]
            items.sort(key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
        out.append({"title": title, "chart": charts.hbar_chart(
            items, axis_label="actors", fmt=lambda v: f"{v:.0f}", label_width=130,
            width=380, bar_height=14, title=f"actors by {title}")})
    return out


# --------------------------------------------------------------------------------------------
# Against production
# --------------------------------------------------------------------------------------------


def _comparison(session: Session, prod_id: int, *, ov: dict[str, Any], head: Headline,
                per_class: pd.DataFrame) -> dict[str, Any]:
    """Headline scores and per-class recall beside whatever ``production`` points at."""
    prod_ov = queries.model_overview(session, prod_id)
    prod_metrics = queries.model_metrics(session, prod_id)
    prod_head = headline(prod_metrics)
    rows = []
    for metric, label in (("uar", "UAR"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        a, b = head[metric]["mean"], prod_head[metric]["mean"]
        rows.append({"metric": label, "this": a, "production": b,
                     "delta": (a - b) if a is not None and b is not None else None})
    prod_pc = per_class_table(prod_metrics, list(prod_ov["classes"]))
    return {"production": prod_ov, "rows": rows,
            "recall_chart": _recall_chart(per_class, prod_pc, ov=ov, prod_ov=prod_ov),
            "file": model_file(prod_ov["name"], prod_ov["version"]),
            "same_scheme": prod_ov["label_scheme"] == ov["label_scheme"]}


def _recall_chart(per_class: pd.DataFrame, prod_pc: pd.DataFrame, *, ov: dict[str, Any],
                  prod_ov: dict[str, Any]) -> Markup | None:
    if "recall" not in per_class.columns or "recall" not in prod_pc.columns:
        return None
    shared = [c for c in per_class.index if c in prod_pc.index]
    if not shared:
        return None
    return charts.grouped_bar_chart(
        shared, {f"v{ov['version']} (this)": [per_class.at[c, "recall"] for c in shared],
                 f"{prod_ov['name']} v{prod_ov['version']} (production)":
                     [prod_pc.at[c, "recall"] for c in shared]},
        y_label="recall", colors=["#2f6db5", "#9aa5b1"], title="recall per class")

