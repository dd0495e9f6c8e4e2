"""Report builders: query -> shape -> chart -> render -> one self-contained HTML file.

Layout of a reports folder (``Settings.reports_path`` by default)::

    index.html                       every report, newest first
    model-<name>-v<version>.html     one per model version
    batch-<YYYY-MM-DD>.html          one per batch date
    calls/call-<id>.html             one per call

Each builder returns the path it wrote. Inside a Prefect flow run, each also publishes a link
artifact (nothing happens outside a flow, and Prefect is not imported for it).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup
from sqlalchemy.orm import Session

from reports import charts, queries
from reports.render import fmt_pct, fmt_signed_pp, render

GROUP_TITLES = {"sex": "sex", "age_band": "age band", "race": "race", "ethnicity": "ethnicity"}
AGE_BANDS = ((0, 18, "<18"), (18, 30, "18-29"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 200, "60+"))
# A subgroup UAR this far below the overall UAR is flagged in the model report.
GROUP_GAP_WARNING = 0.10


def slug(value: object) -> str:
    """A file-name-safe form of a model name (lower-case letters, digits, dot, dash)."""
    return re.sub(r"[^a-z0-9.]+", "-", str(value).lower()).strip("-") or "x"


def model_file(name: str, version: int) -> str:
    return f"model-{slug(name)}-v{int(version)}.html"


def batch_file(batch_date: dt.date) -> str:
    return f"batch-{batch_date.isoformat()}.html"


def call_file(call_id: int) -> str:
    return f"calls/call-{int(call_id)}.html"


def _write(out_dir: Path, relative: str, html: str) -> Path:
    path = Path(out_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)  # atomic: the index never links a half-written file
    return path


def publish_artifact(path: Path, *, key: str, description: str) -> None:
    """A Prefect link artifact for ``path`` when called inside a flow or task run."""
    if "prefect" not in sys.modules:  # not imported -> certainly not inside a flow run
        return
    from prefect.artifacts import create_link_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    create_link_artifact(key=slug(key).replace(".", "-")[:100], link=path.resolve().as_uri(),
                         link_text=path.name, description=description)


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _age_band(age: Any) -> str:
    a = _finite(age)
    if a is None:
        return "unknown"
    return next(label for lo, hi, label in AGE_BANDS if lo <= a < hi)


def _counts(series: pd.Series) -> list[tuple[str, float]]:
    counts = series.fillna("unknown").astype(str).value_counts()
    return [(str(k), float(v)) for k, v in counts.items()]


def _extra(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else {}
    return {}


# --------------------------------------------------------------------------------------------
# Model report
# --------------------------------------------------------------------------------------------


def _headline(metrics: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """metric -> {pooled, mean, std, n_folds} over speaker-independent folds (no groups/classes)."""
    out: dict[str, dict[str, float | None]] = {}
    plain = metrics[metrics["group_name"].isna() & metrics["class_label"].isna()]
    for metric in ("uar", "accuracy", "macro_f1"):
        rows = plain[plain["metric"] == metric]
        folds = rows[rows["fold"].notna()]["value"].astype(float)
        pooled = rows[rows["fold"].isna()]["value"]
        out[metric] = {
            "pooled": _finite(pooled.iloc[0]) if len(pooled) else None,
            "mean": float(folds.mean()) if len(folds) else None,
            "std": float(folds.std(ddof=1)) if len(folds) > 1 else None,
            "n_folds": float(len(folds)),
        }
        if out[metric]["mean"] is None:
            out[metric]["mean"] = out[metric]["pooled"]
    # Training stores its own fold mean/std of UAR; use them so every tool quotes one number.
    for name, key in (("uar_mean", "mean"), ("uar_std", "std")):
        stored = plain[(plain["metric"] == name) & plain["fold"].isna()]["value"]
        if len(stored) and _finite(stored.iloc[0]) is not None:
            out["uar"][key] = float(stored.iloc[0])
    return out


def _confusion(metrics: pd.DataFrame, classes: Sequence[str]) -> tuple[list[list[float]], list[str]]:
    """The pooled confusion matrix: one row with extra {labels, matrix}, or per-cell rows."""
    rows = metrics[(metrics["metric"] == "confusion") & metrics["fold"].isna()
                   & metrics["group_name"].isna()]
    for extra in rows["extra"]:
        ex = _extra(extra)
        if "matrix" in ex:
            return [[float(v) for v in r] for r in ex["matrix"]], [str(x) for x in
                                                                  ex.get("labels", classes)]
    # Alternative layout: one row per cell, class_label = true class, extra.predicted = column.
    cells = [(r.class_label, _extra(r.extra).get("predicted"), r.value) for r in rows.itertuples()]
    cells = [c for c in cells if c[0] is not None and c[1] is not None]
    if cells:
        labels = list(classes)
        idx = {c: i for i, c in enumerate(labels)}
        m = [[0.0] * len(labels) for _ in labels]
        for true, pred, value in cells:
            if true in idx and pred in idx:
                m[idx[true]][idx[pred]] = float(value)
        return m, labels
    return [], list(classes)


def _per_class(metrics: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    rows = metrics[metrics["class_label"].notna() & metrics["fold"].isna()
                   & metrics["group_name"].isna()
                   & metrics["metric"].isin(["precision", "recall", "f1", "roc_auc", "support"])]
    table = rows.pivot_table(index="class_label", columns="metric", values="value", aggfunc="first")
    support = {}
    for r in rows.itertuples():
        n = _extra(r.extra).get("support")
        if n is not None:
            support[r.class_label] = n
    table = table.reindex([c for c in classes if c in table.index] +
                          [c for c in table.index if c not in classes])
    if support and "support" not in table.columns:
        table["support"] = [support.get(c) for c in table.index]
    # Every column present (NaN when not stored) so templates need no existence checks.
    return table.reindex(columns=["precision", "recall", "f1", "roc_auc", "support"])


def _roc(metrics: pd.DataFrame, classes: Sequence[str]) -> list[charts.Series]:
    colors = charts.class_colors(classes)
    series = []
    rows = metrics[(metrics["metric"] == "roc_auc") & metrics["fold"].isna()
                   & metrics["group_name"].isna() & metrics["class_label"].notna()]
    for r in rows.itertuples():
        ex = _extra(r.extra)
        fpr, tpr = ex.get("fpr"), ex.get("tpr")
        if fpr and tpr and len(fpr) == len(tpr):
            # Long curves are thinned to <= 200 points: the file stays small, the shape stays.
            step = max(1, len(fpr) // 200)
            xs = [float(v) for v in fpr[::step]] + [float(fpr[-1])]
            ys = [float(v) for v in tpr[::step]] + [float(tpr[-1])]
            series.append(charts.Series(f"{r.class_label} (AUC {float(r.value):.2f})", xs, ys,
                                        colors.get(str(r.class_label), charts.ACCENT)))
    return series


def _importance(metrics: pd.DataFrame, feature_names: Sequence[str]) -> list[tuple[str, float]]:
    rows = metrics[metrics["metric"] == "feature_importance"]
    items: list[tuple[str, float]] = []
    for r in rows.itertuples():
        ex = _extra(r.extra)
        if "names" in ex and "values" in ex:  # one row holding the whole vector
            items.extend((str(n), float(v)) for n, v in zip(ex["names"], ex["values"], strict=False))
            continue
        name = ex.get("feature") or ex.get("name") or r.class_label or r.group_value
        if name is None and "index" in ex and int(ex["index"]) < len(feature_names):
            name = feature_names[int(ex["index"])]
        if name is not None:
            items.append((str(name), float(r.value)))
    items.sort(key=lambda kv: -kv[1])
    return items[:15]


def _groups(metrics: pd.DataFrame, overall: float | None) -> list[dict[str, Any]]:
    rows = metrics[metrics["group_name"].notna() & (metrics["metric"] == "uar")
                   & metrics["fold"].isna()]
    out = []
    for name in ["sex", "age_band", "race", "ethnicity"] + sorted(
            set(rows["group_name"]) - {"sex", "age_band", "race", "ethnicity"}):
        g = rows[rows["group_name"] == name]
        if g.empty:
            continue
        items = [(str(r.group_value), float(r.value)) for r in g.itertuples()]
        ns = [_extra(r.extra).get("n") for r in g.itertuples()]
        labels = [f"{v} (n={n})" if n is not None else v for (v, _), n in zip(items, ns, strict=True)]
        flagged = [v for v, val in items if overall is not None and overall - val > GROUP_GAP_WARNING]
        colors = [charts.ALERT if v in flagged else charts.ACCENT for v, _ in items]
        out.append({
            "name": GROUP_TITLES.get(name, name),
            "chart": charts.hbar_chart(list(zip(labels, [v for _, v in items], strict=True)),
                                       axis_label="UAR (unweighted average recall)",
                                       fmt=lambda v: f"{v:.2f}", colors=colors, max_value=1.0,
                                       reference=(overall, f"overall {overall:.2f}")
                                       if overall is not None else None, width=500,
                                       label_width=140,
                                       title=f"UAR by {GROUP_TITLES.get(name, name)}"),
            "flagged": flagged,
        })
    return out


def model_context(session: Session, model_version_id: int) -> dict[str, Any]:
    """Everything the model report shows, as template-ready values."""
    ov = queries.model_overview(session, model_version_id)
    metrics = queries.model_metrics(session, model_version_id)
    clips = queries.training_clips(session, model_version_id)
    classes = list(ov["classes"])
    head = _headline(metrics)
    uar = head["uar"]
    chance = 1.0 / len(classes) if classes else None

    fold_rows = metrics[(metrics["metric"] == "uar") & metrics["fold"].notna()
                        & metrics["group_name"].isna() & metrics["class_label"].isna()]
    fold_chart = charts.hbar_chart(
        [(f"fold {int(r.fold) + 1}", float(r.value)) for r in fold_rows.itertuples()],
        axis_label="UAR on held-out speakers", max_value=1.0,
        reference=(chance, f"chance {chance:.2f}") if chance else None,
        title="UAR per speaker-independent fold") if len(fold_rows) else None

    # Data summary: per corpus, per class, and the speakers' demographics (one row per actor).
    actors = clips.drop_duplicates(["corpus", "actor_code"]) if len(clips) else clips
    corpora = (clips.groupby("corpus").agg(clips=("emotion", "size"),
                                           actors=("actor_code", "nunique"),
                                           hours=("duration_s", lambda s: float(s.sum()) / 3600))
               .reset_index().to_dict("records") if len(clips) else [])
    class_items = _counts(clips["class_label"]) if len(clips) else []
    class_items.sort(key=lambda kv: classes.index(kv[0]) if kv[0] in classes else 99)
    demo_charts = []
    if len(actors):
        actors = actors.assign(age_band=actors["age"].map(_age_band))
        for column, title in (("sex", "sex"), ("age_band", "age band"), ("race", "race")):
            items = _counts(actors[column])
            if column == "age_band":
                order = [b[2] for b in AGE_BANDS] + ["unknown"]
                items.sort(key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
            demo_charts.append({"title": title, "chart": charts.hbar_chart(
                items, axis_label="actors", fmt=lambda v: f"{v:.0f}", label_width=130,
                width=380, bar_height=14, title=f"actors by {title}")})

    matrix, cm_labels = _confusion(metrics, classes)
    per_class = _per_class(metrics, classes)
    pc_chart = None
    if not per_class.empty and {"precision", "recall"} <= set(per_class.columns):
        pc_chart = charts.grouped_bar_chart(
            list(per_class.index),
            {"precision": list(per_class["precision"]), "recall": list(per_class["recall"])},
            y_label="score (0-1)", colors=["#2f6db5", "#e07b39"],
            title="precision and recall per class")
    roc_series = _roc(metrics, classes)
    roc_chart = charts.line_chart(
        roc_series, x_label="false-positive rate", y_label="true-positive rate",
        x_range=(0, 1), y_range=(0, 1), diagonal=True, height=320, width=560,
        x_tick_format=lambda v: f"{v:.1f}", y_tick_format=lambda v: f"{v:.1f}",
        title="ROC curves, one class against the rest") if roc_series else None
    importance = _importance(metrics, list(ov.get("feature_names") or []))
    methods = {_extra(e).get("method") for e in
               metrics[metrics["metric"] == "feature_importance"]["extra"]}
    imp_label = ("drop in UAR when the feature is shuffled (held-out speakers)"
                 if any(m and "permutation" in str(m) for m in methods) else "importance")
    imp_chart = charts.hbar_chart(importance, axis_label=imp_label,
                                  fmt=lambda v: f"{v:.3f}", label_width=190,
                                  title="top features") if importance else None

    # Comparison with whatever `production` points at.
    prod_id = queries.alias_target(session, "production")
    comparison = None
    if prod_id is not None and prod_id != model_version_id:
        prod_ov = queries.model_overview(session, prod_id)
        prod_metrics = queries.model_metrics(session, prod_id)
        prod_head = _headline(prod_metrics)
        rows = []
        for metric, label in (("uar", "UAR"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            a, b = head[metric]["mean"], prod_head[metric]["mean"]
            rows.append({"metric": label, "this": a, "production": b,
                         "delta": (a - b) if a is not None and b is not None else None})
        prod_pc = _per_class(prod_metrics, list(prod_ov["classes"]))
        recall_chart = None
        if "recall" in per_class.columns and "recall" in prod_pc.columns:
            shared = [c for c in per_class.index if c in prod_pc.index]
            if shared:
                recall_chart = charts.grouped_bar_chart(
                    shared, {f"v{ov['version']} (this)": [per_class.at[c, "recall"] for c in shared],
                             f"{prod_ov['name']} v{prod_ov['version']} (production)":
                                 [prod_pc.at[c, "recall"] for c in shared]},
                    y_label="recall", colors=["#2f6db5", "#9aa5b1"], title="recall per class")
        comparison = {"production": prod_ov, "rows": rows, "recall_chart": recall_chart,
                      "file": model_file(prod_ov["name"], prod_ov["version"]),
                      "same_scheme": prod_ov["label_scheme"] == ov["label_scheme"]}

    diag = metrics[metrics["metric"] == "diagnostic_random_split_uar"]["value"]
    return {
        "kind": "model",
        "random_split_uar": _finite(diag.iloc[0]) if len(diag) else None,
        "title": f"Model {ov['name']} v{ov['version']}",
        "subtitle": f"{ov['algorithm']} · {ov['label_scheme']} ({len(classes)} classes) · "
                    f"features {ov['feature_set']}/{ov['feature_channel']} v{ov['feature_version']}",
        "generated_at": dt.datetime.now(dt.UTC),
        "ov": ov,
        "classes": classes,
        "head": head,
        "chance": chance,
        "uar": uar,
        "fold_chart": fold_chart,
        "corpora": corpora,
        "n_clips": len(clips),
        "n_actors": len(actors),
        "class_chart": charts.hbar_chart(class_items, axis_label="training clips",
                                         fmt=lambda v: f"{v:.0f}",
                                         colors=[charts.color_for(k, i) for i, (k, _) in
                                                 enumerate(class_items)],
                                         title="training clips per class") if class_items else None,
        "demo_charts": demo_charts,
        "confusion_chart": charts.heatmap(matrix, cm_labels, cm_labels) if matrix else None,
        "per_class": per_class.reset_index().to_dict("records") if not per_class.empty else [],
        "per_class_chart": pc_chart,
        "roc_chart": roc_chart,
        "groups": _groups(metrics, uar["pooled"] if uar["pooled"] is not None else uar["mean"]),
        "importance_chart": imp_chart,
        "importance_label": imp_label,
        "is_production": prod_id == model_version_id,
        "has_production": prod_id is not None,
        "comparison": comparison,
        "params_json": json.dumps(ov.get("params") or {}, sort_keys=True),
        "meta": {"kind": "model", "sort": str(ov["created_at"]),
                 "summary": f"UAR {fmt_pct(uar['mean'])}"
                            + (f" ± {fmt_pct(uar['std'])}" if uar["std"] is not None else "")
                            + f" over {int(uar['n_folds'] or 0)} speaker folds"
                            + (" · production" if prod_id == model_version_id else ""),
                 "model_version_id": int(model_version_id)},
        "legend": charts.legend(charts.class_colors(classes)),
        "root": "",
    }


def model_report(session: Session, model_version_id: int, out_dir: Path) -> Path:
    """Write the model report for ``model_version_id``; return its path."""
    ctx = model_context(session, model_version_id)
    path = _write(Path(out_dir), model_file(ctx["ov"]["name"], ctx["ov"]["version"]),
                  render("model.html.j2", ctx))
    publish_artifact(path, key=f"model-report-{ctx['ov']['name']}-v{ctx['ov']['version']}",
                     description=f"{ctx['title']}: UAR {fmt_pct(ctx['uar']['mean'])}")
    return path


# --------------------------------------------------------------------------------------------
# Batch report
# --------------------------------------------------------------------------------------------


def _rate(num: float, den: float) -> float | None:
    return num / den if den else None


def _day_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Daily rates from daily_trends rows."""
    if df.empty:
        return df.assign(escalation_rate=[], failure_rate=[])
    return df.assign(
        escalation_rate=[_rate(float(e), float(s)) for e, s in zip(df["escalations"], df["scored"],
                                                                   strict=True)],
        failure_rate=[_rate(float(f), float(c)) for f, c in zip(df["failed"], df["calls"],
                                                                strict=True)],
    )


TREND_METRICS = (
    ("calls", "calls", "int"),
    ("escalation_rate", "escalation rate", "pct"),
    ("customer_negative", "customer negative share", "pct"),
    ("agent_negative", "agent negative share", "pct"),
    ("failure_rate", "failure rate", "pct"),
    ("mean_duration_s", "mean call length", "dur"),
)


def _trend_table(days: pd.DataFrame, batch_date: dt.date) -> list[dict[str, Any]]:
    today = days[days["day"] == batch_date]
    out = []
    for column, label, kind in TREND_METRICS:
        value = _finite(today[column].iloc[0]) if len(today) else None
        row: dict[str, Any] = {"label": label, "kind": kind, "today": value}
        for window in (7, 30):
            prev = days[(days["day"] < batch_date)
                        & (days["day"] >= batch_date - dt.timedelta(days=window))]
            vals = [v for v in (_finite(x) for x in prev[column]) if v is not None]
            base = float(np.mean(vals)) if vals else None
            row[f"base{window}"] = base
            row[f"n{window}"] = len(vals)
            row[f"delta{window}"] = (value - base) if value is not None and base is not None else None
        out.append(row)
    return out


def _movers(session: Session, batch_date: dt.date, *, by: str, min_calls: int) -> dict[str, Any]:
    """Groups whose customer negative share changed most against the previous 7 nights."""
    g = queries.group_trends(session, batch_date - dt.timedelta(days=7), batch_date, by=by)
    if g.empty:
        return {"rows": [], "chart": None, "has_history": False}
    g["is_today"] = g["day"] == batch_date
    agg = g.groupby(["grp", "is_today"]).agg(
        neg=("customer_negative_s", "sum"), talk=("customer_talk_s", "sum"),
        esc=("escalations", "sum"), scored=("scored", "sum"), calls=("calls", "sum")).reset_index()
    today = agg[agg["is_today"]].set_index("grp")
    base = agg[~agg["is_today"]].set_index("grp")
    rows = []
    for grp, t in today.iterrows():
        now = _rate(float(t["neg"]), float(t["talk"]))
        row = {"name": str(grp), "calls": int(t["calls"]), "negative": now,
               "escalation_rate": _rate(float(t["esc"]), float(t["scored"])),
               "base_negative": None, "base_escalation_rate": None, "delta": None,
               "base_calls": 0}
        if grp in base.index:
            b = base.loc[grp]
            row["base_calls"] = int(b["calls"])
            row["base_negative"] = _rate(float(b["neg"]), float(b["talk"]))
            row["base_escalation_rate"] = _rate(float(b["esc"]), float(b["scored"]))
            if now is not None and row["base_negative"] is not None:
                row["delta"] = now - row["base_negative"]
        rows.append(row)
    has_history = any(r["delta"] is not None for r in rows)
    # Only groups with enough calls on both sides are ranked: small groups swing by chance.
    ranked = [r for r in rows if r["delta"] is not None and r["calls"] >= min_calls
              and r["base_calls"] >= min_calls]
    ranked.sort(key=lambda r: -abs(r["delta"]))
    top = ranked[:8]
    chart = charts.hbar_chart(
        [(r["name"], r["delta"]) for r in top],
        axis_label="change in customer negative share vs previous 7 nights (percentage points)",
        fmt=lambda v: "0" if abs(v) < 1e-9 else fmt_signed_pp(v).replace(" pp", ""),
        colors=[charts.ALERT if r["delta"] > 0 else "#58a869" for r in top],
        width=520, label_width=110, title=f"{by} movers") if top else None
    if not has_history:  # first night: rank today's levels so the section is still useful
        rows.sort(key=lambda r: -(r["negative"] or 0))
        top = [r for r in rows if r["calls"] >= min_calls][:8]
    return {"rows": top, "chart": chart, "has_history": has_history}


# Agents listed in each ranking of the batch report's conversation section.
AGENT_RANK_ROWS = 10


def _agent_conversation(session: Session, batch_ids: list[int]) -> dict[str, Any]:
    """Agents ranked by the interruptions they made and by the dead air on their calls, with
    the customer negative share and escalation rate beside them (calls with metrics only)."""
    df = queries.agent_conversation(session, batch_ids)
    rows = [{k: (_finite(v) if k != "agent_id" else str(v)) for k, v in r.items()}
            for r in df.to_dict("records")]
    for r in rows:
        r["dead_air_per_call_s"] = _rate(r["dead_air_s"] or 0.0, r["calls"] or 0.0)
        r["interruptions_per_call"] = _rate(r["agent_interruptions"] or 0.0, r["calls"] or 0.0)
    by_interruptions = sorted(rows, key=lambda r: (-(r["interruptions_per_call"] or 0.0),
                                                   -(r["agent_interruptions"] or 0.0),
                                                   r["agent_id"]))
    by_dead_air = sorted(rows, key=lambda r: (-(r["dead_air_per_call_s"] or 0.0),
                                              r["agent_id"]))
    return {"n_agents": len(rows), "n_calls": int(sum(r["calls"] or 0 for r in rows)),
            "by_interruptions": by_interruptions[:AGENT_RANK_ROWS],
            "by_dead_air": by_dead_air[:AGENT_RANK_ROWS]}


def _negative_mass(probabilities: Any, negative: set[str]) -> float:
    probs = probabilities if isinstance(probabilities, dict) else json.loads(probabilities or "{}")
    return float(sum(float(v) for k, v in probs.items() if k in negative))


def _rule_metrics(options: Any) -> dict[str, str]:
    """rule name -> summary metric, from the rules the scorer stored with the batch."""
    opts = _extra(options)
    rules = opts.get("rules")  # "model": the model's operating point (same rule names)
    return {str(r.get("name")): str(r.get("metric")) for r in
            (rules if isinstance(rules, list) else []) if isinstance(r, dict)}


def _negative_runs(segs: pd.DataFrame, role: str, negative: set[str],
                   gap_s: float) -> tuple[float, float] | None:
    """The longest run of consecutive negative segments of ``role`` (as the scorer counts it)."""
    best: tuple[float, float] | None = None
    run_start: float | None = None
    run_end = 0.0
    for seg in segs[segs["role"] == role].sort_values("start_s").itertuples():
        is_neg = bool(seg.is_negative) if seg.is_negative is not None else (
            str(seg.emotion) in negative)
        start, end = float(seg.start_s), float(seg.end_s)
        if is_neg and run_start is not None and start - run_end <= gap_s:
            run_end = max(run_end, end)
        elif is_neg:
            run_start, run_end = start, end
        else:
            run_start = None
        if run_start is not None and (best is None or run_end - run_start > best[1] - best[0]):
            best = (run_start, run_end)
    return best


def escalation_window(call: dict[str, Any], segments: pd.DataFrame, negative: set[str],
                      options: Any = None) -> tuple[float, float] | None:
    """Where in the call the escalation rule fired, as (start_s, end_s); None if not escalated."""
    focus = escalation_focus(call, segments, negative, options)
    return None if focus is None else (focus[0], focus[1])


def escalation_focus(call: dict[str, Any], segments: pd.DataFrame, negative: set[str],
                     options: Any = None) -> tuple[float, float, str] | None:
    """(start_s, end_s, what the stretch is) for an escalated call; None if not escalated.

    The scorer's own record (``calls.extra.escalation.start_s/end_s``) wins when present.
    Otherwise the rule's metric (from the rules stored in ``batches.options``) says where:
    a negative streak -> that run; a trend or last-third rule -> the last third; overtalk ->
    first to last overtalk; a share rule or an unknown rule -> the longest negative customer run
    (where a listener should start), else the whole call.
    """
    if not call.get("escalated"):
        return None
    ex = _extra(call.get("extra"))
    rec = ex.get("escalation") if isinstance(ex.get("escalation"), dict) else None
    if rec and _finite(rec.get("start_s")) is not None:
        start = float(rec["start_s"])
        end = _finite(rec.get("end_s"))
        return start, end if end is not None else start + 1.0, "where the scorer says it fired"
    duration = _finite(call.get("duration_s")) or (
        float(segments["end_s"].max()) if len(segments) else 0.0)
    rule = str(call.get("escalation_rule") or "")
    metric = _rule_metrics(options).get(rule, rule)
    gap = _finite(_extra(options).get("streak_gap_s")) or 2.0
    if metric in ("customer_trend", "customer_negative_last_third") or any(
            w in metric for w in ("trend", "worsen", "last_third")):
        return 2 * duration / 3, duration, "the last third, where the customer got worse"
    if metric == "customer_negative_first_third":
        return 0.0, duration / 3, "the first third of the call"
    if "overtalk" in metric:
        spans = _overtalk(segments)
        if spans:
            return spans[0][0], spans[-1][1], "from the first to the last overtalk"
    role = "agent" if metric.endswith("_agent") else "customer"
    run = _negative_runs(segments, role, negative, gap)
    if run is not None:
        what = ("the longest negative streak" if "streak" in metric
                else f"the {role}'s longest negative stretch (start listening here)")
        return run[0], run[1], what
    return (0.0, duration, "the whole call") if duration else None


def _sparkline(call: dict[str, Any], segs: pd.DataFrame, negative: set[str],
               window: tuple[float, float] | None) -> Markup:
    lines = {}
    for role in ("customer", "agent"):
        r = segs[segs["role"] == role]
        lines[role] = [((float(s.start_s) + float(s.end_s)) / 2, _negative_mass(s.probabilities,
                                                                               negative))
                       for s in r.itertuples()]
    return charts.sparkline(lines, duration_s=float(call.get("duration_s") or 1.0),
                            escalation=window)


def _batch_headline(n_calls: int, n_scored: int, n_failed: int, n_escalated: int,
                    trend_rows: list[dict[str, Any]], queues: dict[str, Any]) -> list[str]:
    """Three plain sentences a team lead can read in ten seconds."""
    esc = trend_rows[1]
    neg = trend_rows[2]
    lines = [f"{n_scored:,} of {n_calls:,} calls scored"
             + (f"; {n_failed:,} failed (reasons below)." if n_failed else "; none failed.")]
    change = (f", {fmt_signed_pp(esc['delta7'])} against the previous 7 nights"
              if esc["delta7"] is not None else "")
    lines.append(f"{n_escalated:,} calls escalated ({fmt_pct(_rate(n_escalated, n_scored))})"
                 f"{change}.")
    if neg["today"] is not None:
        change = (f" ({fmt_signed_pp(neg['delta7'])} vs 7 nights, {fmt_signed_pp(neg['delta30'])} "
                  f"vs 30)" if neg["delta7"] is not None and neg["delta30"] is not None else "")
        lines.append(f"Customers sounded negative for {fmt_pct(neg['today'])} of their talk time"
                     f"{change}.")
    if queues["has_history"] and queues["rows"]:
        top = queues["rows"][0]
        lines.append(f"Queue that moved most: {top['name']} ({fmt_signed_pp(top['delta'])} "
                     f"customer negative share).")
    return lines


def batch_context(session: Session, batch_date: dt.date, out_dir: Path | None = None) -> dict[str, Any]:
    batches = queries.batches_on(session, batch_date)
    if batches.empty:
        known = queries.batch_dates(session)
        raise queries.ReportNotFoundError(
            f"no batch on {batch_date.isoformat()}; batch dates in the database: "
            f"{', '.join(d.isoformat() for d in known[-10:]) or 'none (run `ser score`)'}")
    ids = [int(i) for i in batches["id"]]
    calls = queries.batch_calls(session, ids)
    scored = calls[calls["status"] == "scored"]
    failed = calls[calls["status"] == "failed"]
    escalated = scored[scored["escalated"].astype(bool)].sort_values(
        ["longest_negative_streak_s", "negative_share_customer"], ascending=False)
    model_ids = sorted({int(m) for m in batches["model_version_id"]})
    scheme_rows = [queries.model_overview(session, m) for m in model_ids]
    classes: list[str] = []
    negative: set[str] = set()
    for ov in scheme_rows:
        classes += [c for c in ov["classes"] if c not in classes]
        negative |= queries.negative_classes(session, ov["label_scheme"])

    # Emotion mix per role (share of speech time).
    mix = queries.batch_emotion_time(session, ids)
    mix_rows = []
    for role in ("customer", "agent"):
        r = mix[mix["role"] == role]
        total = float(r["seconds"].sum())
        if total:
            mix_rows.append((role, {str(e): float(s) / total for e, s in
                                    zip(r["emotion"], r["seconds"], strict=True)}))
    mix_classes = classes + sorted(set(mix["emotion"]) - set(classes)) if len(mix) else classes

    # Trends: the night itself against the 7 and 30 nights before it.
    days = _day_metrics(queries.daily_trends(session, batch_date - dt.timedelta(days=30),
                                             batch_date))
    trend_rows = _trend_table(days, batch_date)
    has_history = bool((days["day"] < batch_date).any()) if len(days) else False
    trend_chart = None
    if has_history:
        offsets = [(d - batch_date).days for d in days["day"]]
        first = min(offsets)
        step = 1 if first >= -10 else 5
        ticks = [float(o) for o in range(0, first - 1, -step)][::-1]
        trend_chart = charts.line_chart(
            [charts.Series("escalation rate", offsets, list(days["escalation_rate"]), charts.ALERT,
                           markers=True),
             charts.Series("customer negative share", offsets,
                           [_finite(v) for v in days["customer_negative"]], "#2f6db5",
                           markers=True),
             charts.Series("agent negative share", offsets,
                           [_finite(v) for v in days["agent_negative"]], "#9aa5b1", dash="4 3")],
            x_label="night (this batch highlighted)", y_label="share",
            x_range=(first - 0.5, 0.5),
            x_ticks=ticks, y_range=(0, max(0.1, min(1.0, 1.2 * max(
                [v for c in ("escalation_rate", "customer_negative", "agent_negative")
                 for v in (_finite(x) for x in days[c]) if v is not None] or [0.1])))),
            x_tick_format=lambda v: (batch_date + dt.timedelta(days=int(v))).strftime("%d %b"),
            y_tick_format=lambda v: f"{v:.0%}", highlight_x=0.0, width=1000, height=280,
            title="nightly escalation rate and negative shares, up to 31 nights")

    # Failures grouped by reason.
    failure_reasons = (failed.groupby(failed["error"].fillna("unknown")).size()
                       .sort_values(ascending=False).reset_index(name="n")
                       .rename(columns={"error": "reason"}).to_dict("records")) if len(failed) else []

    # One section per escalated call, with a compact negative-probability line.
    segs = queries.segments_for_calls(session, [int(i) for i in escalated["id"]])
    seg_groups = {int(k): g for k, g in segs.groupby("call_id")} if len(segs) else {}
    empty = segs.iloc[0:0]
    options = {int(b.id): b.options for b in batches.itertuples()}
    sections = []
    for rank, call in enumerate(escalated.to_dict("records"), start=1):
        call_segs = seg_groups.get(int(call["id"]), empty)
        focus = escalation_focus(call, call_segs, negative, options.get(int(call["batch_id"])))
        window = None if focus is None else (focus[0], focus[1])
        has_file = out_dir is not None and (Path(out_dir) / call_file(call["id"])).exists()
        sections.append({**call, "rank": rank, "window": window,
                         "window_what": focus[2] if focus else None,
                         "spark": _sparkline(call, call_segs, negative, window),
                         "file": call_file(call["id"]) if has_file else None})
    rule_counts = (escalated.groupby("escalation_rule").size().sort_values(ascending=False)
                   .to_dict() if len(escalated) else {})
    n_scored = len(scored)
    # Small nights (the demo) still rank their groups; big nights ignore tiny groups.
    queues = _movers(session, batch_date, by="queue", min_calls=max(2, min(5, n_scored // 20)))
    agents = _movers(session, batch_date, by="agent_id", min_calls=max(2, min(3, n_scored // 50)))
    conversation = _agent_conversation(session, ids)
    audio_s = float(batches["audio_seconds"].sum())
    wall = [(_finite((f - s).total_seconds()) if f is not None and s is not None else None)
            for s, f in zip(batches["started_at"], batches["finished_at"], strict=True)]
    wall_s = sum(w for w in wall if w) or None
    return {
        "kind": "batch",
        "title": f"Nightly batch {batch_date.isoformat()}",
        "subtitle": ", ".join(f"{r.model_name} v{r.model_version}" for r in
                              batches.drop_duplicates("model_version_id").itertuples())
                    + f" · {len(batches)} batch{'es' if len(batches) > 1 else ''}",
        "generated_at": dt.datetime.now(dt.UTC),
        "batch_date": batch_date,
        "batches": batches.to_dict("records"),
        "n_calls": len(calls),
        "n_scored": n_scored,
        "n_failed": len(failed),
        "n_escalated": len(escalated),
        "escalation_rate": _rate(len(escalated), n_scored),
        "trust": _trust(scored),
        "audio_hours": audio_s / 3600,
        "speed": (audio_s / wall_s) if wall_s else None,
        "failure_reasons": failure_reasons,
        "failed": failed.to_dict("records"),
        "mix_chart": charts.stacked_share_bars(mix_rows, mix_classes, width=1000,
                                               title="emotion mix per role") if mix_rows else None,
        "mix_rows": [{"role": role, **{c: shares.get(c, 0.0) for c in mix_classes}}
                     for role, shares in mix_rows],
        "mix_classes": mix_classes,
        "legend": charts.legend(charts.class_colors(mix_classes)),
        "rule_counts": rule_counts,
        "escalations": sections,
        "trend_rows": trend_rows,
        "trend_chart": trend_chart,
        "has_history": has_history,
        "queues": queues,
        "agents": agents,
        "agent_conversation": conversation,
        "headline": _batch_headline(len(calls), n_scored, len(failed), len(escalated), trend_rows,
                                    queues),
        "calls": calls.to_dict("records"),
        "meta": {"kind": "batch", "sort": batch_date.isoformat(),
                 "summary": f"{n_scored} calls scored, {len(escalated)} escalated "
                            f"({fmt_pct(_rate(len(escalated), n_scored))}), {len(failed)} failed"},
        "root": "",
    }


def batch_report(session: Session, batch_date: dt.date | str, out_dir: Path) -> Path:
    """Write the nightly report for every batch on ``batch_date``; return its path."""
    day = dt.date.fromisoformat(batch_date) if isinstance(batch_date, str) else batch_date
    ctx = batch_context(session, day, Path(out_dir))
    path = _write(Path(out_dir), batch_file(day), render("batch.html.j2", ctx))
    publish_artifact(path, key=f"batch-report-{day.isoformat()}",
                     description=f"{ctx['n_scored']} calls scored, {ctx['n_escalated']} escalated, "
                                 f"{ctx['n_failed']} failed")
    return path


# --------------------------------------------------------------------------------------------
# Call report
# --------------------------------------------------------------------------------------------


def _overtalk(segs: pd.DataFrame) -> list[tuple[float, float]]:
    """Stretches where agent and customer segments overlap (sweep over sorted intervals)."""
    a = sorted((float(s.start_s), float(s.end_s)) for s in segs[segs["role"] == "agent"].itertuples())
    c = sorted((float(s.start_s), float(s.end_s)) for s in
               segs[segs["role"] == "customer"].itertuples())
    out, i, j = [], 0, 0
    while i < len(a) and j < len(c):
        lo, hi = max(a[i][0], c[j][0]), min(a[i][1], c[j][1])
        if hi > lo:
            out.append((lo, hi))
        if a[i][1] < c[j][1]:
            i += 1
        else:
            j += 1
    return out


def _trust(scored: pd.DataFrame) -> dict[str, float | None]:
    """Talk-weighted customer coverage and abstained share, mean confidence, over scored calls
    (None when no call has the numbers, e.g. batches scored before they were stored)."""
    out: dict[str, float | None] = {"coverage": None, "confidence": None, "abstained": None}
    if "customer_scored_share" not in scored or not len(scored):
        return out
    talk = pd.to_numeric(scored["talk_customer_s"], errors="coerce").fillna(0.0)
    for key, col in (("coverage", "customer_scored_share"),
                     ("confidence", "customer_confidence_mean"),
                     ("abstained", "customer_abstained_share")):
        values = pd.to_numeric(scored[col], errors="coerce")
        mask = values.notna() & (talk > 0)
        if mask.any():
            out[key] = float((values[mask] * talk[mask]).sum() / talk[mask].sum())
    return out


def _conversation(session: Session, call: dict[str, Any]) -> charts.Conversation:
    """Quarters, interruptions and long silences of a call (its stored metrics and events)."""
    events = queries.call_events(session, int(call["id"]), int(call["model_version_id"]))
    quarters = [{role: _finite(call.get(f"negative_share_{role}_q{k}"))
                 for role in ("customer", "agent")} for k in range(1, 5)]
    return charts.Conversation(
        quarters=quarters,
        interruptions=[(float(e.start_s), float(e.end_s), str(e.role))
                       for e in events.itertuples() if e.kind == "interruption"],
        silences=[(float(e.start_s), float(e.end_s))
                  for e in events.itertuples() if e.kind == "silence"])


def call_context(session: Session, call_id: int) -> dict[str, Any]:
    call = queries.call_detail(session, call_id)
    segs = queries.call_segments(session, call_id, int(call["model_version_id"]))
    classes = list(call["classes"])
    negative = queries.negative_classes(session, call["label_scheme"])
    # Negative classes at the bottom of each band, so the red mass reads as "how negative".
    band_order = [c for c in classes if c in negative] + [c for c in classes if c not in negative]
    duration = _finite(call["duration_s"]) or float(segs["end_s"].max() if len(segs) else 1.0)
    focus = escalation_focus(call, segs, negative, call.get("batch_options"))
    window = None if focus is None else (focus[0], focus[1])
    segments = [charts.Segment(str(s.role), float(s.start_s), float(s.end_s),
                               s.probabilities if isinstance(s.probabilities, dict)
                               else json.loads(s.probabilities), str(s.emotion))
                for s in segs.itertuples()]
    roles = ["customer", "agent"] + sorted(set(segs["role"]) - {"customer", "agent"})
    overtalk = _overtalk(segs)
    conversation = _conversation(session, call)
    chart = charts.timeline(
        segments, duration_s=duration, classes=band_order, roles=roles, overtalk=overtalk,
        escalation=(window[0], window[1], str(call["escalation_rule"])) if window else None,
        conversation=conversation)
    mix = call["emotion_mix"] if isinstance(call["emotion_mix"], dict) else {}
    mix_rows = []
    for role in roles:
        r = segs[segs["role"] == role]
        if len(r):
            secs = (r["end_s"] - r["start_s"]).groupby(r["emotion"]).sum()
            mix_rows.append((role, {str(k): float(v) for k, v in secs.items()}))
    segs_table = []
    for s in segs.itertuples():
        probs = s.probabilities if isinstance(s.probabilities, dict) else json.loads(s.probabilities)
        segs_table.append({"role": s.role, "start_s": float(s.start_s), "end_s": float(s.end_s),
                           "emotion": s.emotion, "confidence": float(s.confidence),
                           "negative": _negative_mass(probs, negative),
                           "abstained": bool(getattr(s, "abstained", False)),
                           "in_window": bool(window and s.role == "customer"
                                             and float(s.end_s) > window[0]
                                             and float(s.start_s) < window[1])})
    return {
        "kind": "call",
        "title": f"Call {call['call_key']}",
        "subtitle": f"batch {call['batch_date']} · queue {call['queue'] or '–'} · agent "
                    f"{call['agent_id'] or '–'} · model {call['model_name']} v{call['model_version']}",
        "generated_at": dt.datetime.now(dt.UTC),
        "call": call,
        "classes": classes,
        "timeline": chart,
        "legend": charts.legend(charts.class_colors(band_order)),
        "window": window,
        "window_what": focus[2] if focus else None,
        "n_segments": len(segs),
        "n_abstained": int(segs["abstained"].sum()) if "abstained" in segs else 0,
        "n_overtalk": len(overtalk),
        "mix_chart": charts.stacked_share_bars(mix_rows, band_order, title="emotion mix per role")
        if mix_rows else None,
        "stored_mix": mix,
        "segments": segs_table,
        "conversation": conversation,
        "has_conversation": _finite(call.get("interruptions_by_agent")) is not None,
        "quarter_rows": [{"role": role, "shares": [q.get(role) for q in conversation.quarters]}
                         for role in ("customer", "agent")],
        "batch_file": "../" + batch_file(call["batch_date"]),
        "meta": {"kind": "call", "sort": f"{call['batch_date']} {call['call_key']}",
                 "escalated": bool(call["escalated"]),
                 "summary": (f"escalated: {call['escalation_rule']}" if call["escalated"]
                             else "not escalated") + f" · batch {call['batch_date']} · "
                            f"{charts.mmss(duration)}"},
        "root": "../",
    }


def call_report(session: Session, call_id: int, out_dir: Path) -> Path:
    """Write the timeline report of one call; return its path."""
    ctx = call_context(session, call_id)
    path = _write(Path(out_dir), call_file(call_id), render("call.html.j2", ctx))
    publish_artifact(path, key=f"call-report-{call_id}", description=ctx["title"])
    return path


# --------------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------------

_META = re.compile(r'<meta name="ser-report" content="([^"]*)"')
_TITLE = re.compile(r"<title>(.*?)</title>", re.DOTALL)


def _report_meta(path: Path) -> dict[str, Any] | None:
    """kind/title/summary that each report embeds in its <head> (first few KB only)."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        head = fh.read(4096)
    meta = _META.search(head)
    if not meta:
        return None
    import html as _html

    data = json.loads(_html.unescape(meta.group(1)))
    title = _TITLE.search(head)
    data["title"] = _html.unescape(title.group(1)) if title else path.stem
    return data


def index_report(session_or_out_dir: Session | Path | str, out_dir: Path | str | None = None) -> Path:
    """Write ``index.html`` listing every report in the folder; return its path.

    Accepts ``index_report(out_dir)`` and ``index_report(session, out_dir)`` (the index is built
    from the files on disk, so the session is not needed).
    """
    folder = Path(out_dir if out_dir is not None else session_or_out_dir)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict[str, Any]]] = {"batch": [], "model": [], "call": []}
    for path in sorted(folder.glob("*.html")) + sorted(folder.glob("calls/*.html")):
        if path.name == "index.html":
            continue
        meta = _report_meta(path)
        if meta is None or meta.get("kind") not in groups:
            continue
        meta["href"] = path.relative_to(folder).as_posix()
        meta["size_kb"] = path.stat().st_size / 1024
        meta["modified"] = dt.datetime.fromtimestamp(path.stat().st_mtime)
        groups[meta["kind"]].append(meta)
    groups["batch"].sort(key=lambda m: str(m.get("sort", "")), reverse=True)
    groups["model"].sort(key=lambda m: str(m.get("sort", "")), reverse=True)
    groups["call"].sort(key=lambda m: (not m.get("escalated"), str(m.get("sort", ""))))
    ctx = {"kind": "index", "title": "ser-analytics reports", "subtitle":
           f"{sum(len(v) for v in groups.values())} reports in {folder}",
           "generated_at": dt.datetime.now(dt.UTC), "groups": groups, "root": "",
           "meta": {"kind": "index"}}
    path = _write(folder, "index.html", render("index.html.j2", ctx))
    publish_artifact(path, key="reports-index", description=f"{ctx['subtitle']}")
    return path


def build_all(session: Session, out_dir: Path, *, calls: str = "escalated",
              max_calls: int = 200) -> dict[str, list[Path]]:
    """Every model report, every batch report, call reports (``escalated``|``all``|``none``), index.

    Call reports are written before batch reports so a batch report links to them.
    """
    written: dict[str, list[Path]] = {"model": [], "batch": [], "call": [], "index": []}
    out_dir = Path(out_dir)
    for mv_id in queries.model_versions(session)["id"]:
        written["model"].append(model_report(session, int(mv_id), out_dir))
    for day in queries.batch_dates(session):
        if calls != "none":
            ids = queries.batches_on(session, day)["id"].tolist()
            df = queries.batch_calls(session, [int(i) for i in ids])
            df = df[df["status"] == "scored"]
            if calls == "escalated":
                df = df[df["escalated"].astype(bool)]
            for call_id in df["id"].head(max_calls):
                written["call"].append(call_report(session, int(call_id), out_dir))
        written["batch"].append(batch_report(session, day, out_dir))
    written["index"].append(index_report(out_dir))
    return written
