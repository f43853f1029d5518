"""Experiments: compare stored fine-tuning runs in the layout of the paper's Table 3, with bar charts,
ROC and PR curves, the ratio curve, and a CSV export."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.finetune import protocol as X
from core import ui

db = ui.page("Experiments", ":material/leaderboard:")


@st.cache_data(ttl=30, show_spinner=False)
def runs(db_file: str, version: tuple[int, int]) -> list[dict]:
    return X.stored_runs(db_file)


@st.cache_data(ttl=30, show_spinner=False)
def details(db_file: str, version: tuple[int, int], ids: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    return X.stored_details(db_file, list(ids))


all_runs = runs(str(db), ui.store_version(db))
if not all_runs:
    st.info("No finished runs in this store yet. Launch one on the Fine-tune page or run "
            "`python -m core experiment table3 --db PATH --model tfidf`.")
    st.stop()


def _label(r: dict) -> str:
    return f"{X.SECTION_TITLES.get(r['experiment'], r['experiment'])} · {X.cell_title(r)} · {r['model_used']} · {r['run_id']}"


by_id = {r["run_id"]: r for r in all_runs}
grids = sorted({r["grid_id"] for r in all_runs if r.get("grid_id")}, reverse=True)
c1, c2 = st.columns([1, 3])
grid = c1.selectbox("Grid", ["(all runs)"] + grids, key="xp_grid")
pool = [r for r in all_runs if grid.startswith("(") or r.get("grid_id") == grid]
chosen = c2.multiselect("Runs", [r["run_id"] for r in pool], default=[r["run_id"] for r in pool],
                        format_func=lambda i: _label(by_id[i]), key="xp_runs")
selected = [by_id[i] for i in chosen]
if not selected:
    st.info("Select at least one run.")
    st.stop()

rows = X.table3_rows(selected)
models = sorted({r["model_used"] for r in selected})
seeds = sorted({",".join(map(str, r["seeds"] or [])) for r in selected})
st.subheader("Table 3")
st.caption(f"Mean ± sd over seeds ({'; '.join(seeds)}); best of each testing section in bold. "
           f"Model: {', '.join(models)}. Scrub mode: {', '.join(sorted({r['scrub_mode'] or '' for r in selected}))}.")
st.markdown(X.format_table3(rows, markdown=True))
notes = sorted({r["model_note"] for r in selected if r.get("model_note")})
for n in notes:
    st.caption(n)
csv = pd.DataFrame(X.table3_csv_rows(rows)).to_csv(index=False).encode()
st.download_button("Export CSV", csv, file_name="table3.csv", mime="text/csv", key="xp_csv")

# ---------------------------------------------------------------- bars per metric
st.subheader("Metrics")
bars = pd.DataFrame([{"testing": r["testing"], "fine-tuning": r["fine_tuning"], "metric": X.METRIC_TITLES[m],
                      "mean": r["cells"][m]["mean"], "sd": r["cells"][m]["sd"]}
                     for r in rows for m in X.METRICS if r["cells"][m]["mean"] is not None])
tabs = st.tabs([X.METRIC_TITLES[m] for m in X.METRICS])
for tab, m in zip(tabs, X.METRICS):
    data = bars[bars["metric"] == X.METRIC_TITLES[m]]
    fig = px.bar(data, x="testing", y="mean", color="fine-tuning", error_y="sd", barmode="group",
                 labels={"mean": X.METRIC_TITLES[m], "testing": "Testing"}, range_y=[0, 1])
    tab.plotly_chart(fig, key=f"xp_bar_{m}")

# ---------------------------------------------------------------- curves
per_seed, curve_rows = details(str(db), ui.store_version(db), tuple(chosen))
st.subheader("ROC and PR curves")
left, right = st.columns(2)
for col, kind, title, xt, yt in ((left, "roc", "ROC", "False positive rate", "True positive rate"),
                                 (right, "pr", "Precision-recall", "Recall", "Precision")):
    fig = go.Figure()
    for c in curve_rows:
        if c["kind"] != kind or not c["x"]:
            continue
        r = by_id[c["run_id"]]
        fig.add_trace(go.Scatter(x=c["x"], y=c["y"], mode="lines",
                                 name=f"{X.SECTION_TITLES.get(r['experiment'])} · {X.cell_title(r)} (seed {c['seed']})"))
    if kind == "roc":
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance"))
    fig.update_layout(title=title, xaxis_title=xt, yaxis_title=yt, height=450)
    col.plotly_chart(fig, key=f"xp_curve_{kind}")

# ---------------------------------------------------------------- ratio curve
ratio_rows = [r for r in rows if r["experiment"] == "ratio" and r["synthetic_ratio"] is not None]
st.subheader("Ratio test: metric vs share of synthetic trials")
if ratio_rows:
    metric = st.selectbox("Metric", X.METRICS, index=X.METRICS.index("roc_auc"), format_func=X.METRIC_TITLES.get,
                          key="xp_ratio_metric")
    data = pd.DataFrame([{"% synthetic": round(r["synthetic_ratio"] * 100), "mean": r["cells"][metric]["mean"],
                          "sd": r["cells"][metric]["sd"], "model": r["model"]} for r in ratio_rows])
    fig = px.line(data.sort_values("% synthetic"), x="% synthetic", y="mean", error_y="sd", color="model",
                  markers=True, labels={"mean": X.METRIC_TITLES[metric]})
    st.plotly_chart(fig, key="xp_ratio_curve")
else:
    st.caption("No ratio-test runs selected.")

with st.expander("Per-seed results"):
    st.dataframe(pd.DataFrame(per_seed), hide_index=True, key="xp_seed_table")
