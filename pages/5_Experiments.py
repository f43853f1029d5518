"""Experiments: the paper's Table 3 in full (every row of its three sections, ours beside the published
values, a button that runs a missing cell), then the stored runs compared: Table 3 of the selected runs,
bar charts, ROC and PR curves, the ratio curve, and a CSV export."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import ui
from core.ui import figures
from core.finetune import table3 as T3
from core.services import finetune as svc

db = ui.page("Experiments", ":material/leaderboard:")
ss = st.session_state


@st.cache_data(ttl=30, show_spinner=False)
def runs(db_file: str, version: tuple[int, int]) -> list[dict]:
    return svc.stored_runs(db_file)


@st.cache_data(ttl=30, show_spinner=False)
def details(db_file: str, version: tuple[int, int], ids: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    return svc.stored_details(db_file, list(ids))


@st.cache_data(ttl=600, show_spinner="Checking which cells can run on this store…", max_entries=8)
def blocked(db_file: str, version: tuple[int, int], source: str | None, mode: str) -> dict[tuple, str | None]:
    return svc.blocked_cells(db_file, source, mode)


def _fmt(cell: dict) -> str:
    return "**" + cell["text"] + "**" if cell["best"] else cell["text"]


all_runs = runs(str(db), ui.store_version(db))
by_id = {r["run_id"]: r for r in all_runs}

# ---------------------------------------------------------------- Table 3, the paper's whole layout
st.subheader("Table 3: the paper's layout")
with st.container(border=True, key="xp_layout"):
    s1, s2, s3, s4 = st.columns([1.3, 1, 1, 1.2])
    metric = s1.selectbox("Metric", svc.METRICS, index=svc.METRICS.index("roc_auc"), format_func=T3.METRIC_TITLES.get,
                          key="xp_layout_metric")
    model = s2.selectbox("Model for new runs", ["tfidf", "auto", "minilm"], key="xp_layout_model",
                         format_func={"tfidf": "TF-IDF (seconds)", "auto": "BioBERT / MiniLM",
                                      "minilm": "MiniLM (bundled)"}.get)
    seeds_text = s3.text_input("Seeds", value="40,41,42", key="xp_layout_seeds")
    sources = svc.synthetic_sources(db)
    src_names = ["(all usable synthetic trials)"] + [s for s, _ in sources]
    source = s4.selectbox("Synthetic set", src_names, key="xp_layout_source",
                          format_func=lambda s: s if s.startswith("(") else f"{s} ({svc.plural(dict(sources)[s], 'usable trial')})")
    source = None if source.startswith("(") else source
    try:
        seeds = tuple(int(s) for s in seeds_text.split(",") if s.strip())
        if not seeds:
            raise ValueError
    except ValueError:
        seeds = ()
        st.warning(f"Seeds: {seeds_text!r} is not a comma-separated list of integers; runs cannot start.")
    settings = svc.RunRequest("in-distribution", "real", model=model, seeds=seeds or svc.DEFAULT_SEEDS,
                              synthetic_source=source)
    layout = svc.table3_layout(db, all_runs, settings, blocked(str(db), ui.store_version(db), source, "strict"))
    st.caption(f"Every row of the paper's Table 3. **This store**: the newest stored run of each cell "
               f"({T3.METRIC_TITLES[metric]}, mean ± sd over seeds). **Paper**: the published value. "
               + T3.PAPER_NOTE)
    head = st.columns([1.2, 1.6, 1.5, 1.5, 2.2], vertical_alignment="center")
    for col, text in zip(head, ["**Testing**", "**Fine-Tuning**", "**This store**", "**Paper (BioBERT)**", "**Run**"]):
        col.markdown(text)
    last = None
    for i, r in enumerate(layout):
        c = st.container(key=f"xp_cell_{i}").columns([1.2, 1.6, 1.5, 1.5, 2.2], vertical_alignment="center")
        c[0].markdown(f"**{r['testing']}**" if r["testing"] != last else " ")
        last = r["testing"]
        c[1].markdown(r["fine_tuning"])
        cell = r["cells"][metric]
        c[2].markdown(("**" + cell["text"] + "**" if cell["best"] else cell["text"]) if r["run"] else "not run")
        ref = r["paper"][metric]
        c[3].markdown(ref["text"] if ref else "not reported")
        with c[4]:
            if r["job"]:
                st.caption(f"running: {r['job']}")
            elif r["run"]:
                st.caption(f"{r['run']['model_used']} · {r['run_id']}")
            else:
                if st.button("Run", key=f"xp_run_{i}",
                             disabled=bool(r["blocked"]) or not seeds, help=r["blocked"] or
                             f"Starts this one cell in the background ({model}, seeds {','.join(map(str, settings.seeds))})",
                             icon=":material/play_arrow:"):
                    run_id = svc.start(db, r["request"])
                    ss.xp_started = f"Started {r['testing']} · {r['fine_tuning']}: run {run_id} (watch it on the Fine-tune page)."
                    st.rerun()
                if r["blocked"]:
                    st.caption(r["blocked_short"])
    if ss.get("xp_started"):
        st.success(ss.pop("xp_started"))
    st.page_link(ui.PAGES["Fine-tune"], label="Watch background runs on the Fine-tune page", icon=":material/model_training:")

if not all_runs:
    st.info("No finished runs in this store yet: start a cell above, launch one on the Fine-tune page or run "
            "`python -m core experiment table3 --db PATH --model tfidf`.")
    st.stop()


def _label(r: dict) -> str:
    return f"{T3.SECTION_TITLES.get(r['experiment'], r['experiment'])} · {T3.cell_title(r)} · {r['model_used']} · {r['run_id']}"


grids = sorted({r["grid_id"] for r in all_runs if r.get("grid_id")}, reverse=True)
st.subheader("Stored runs")
c1, c2 = st.columns([1, 3])
grid = c1.selectbox("Grid", ["(all runs)"] + grids, key="xp_grid")
pool = [r for r in all_runs if grid.startswith("(") or r.get("grid_id") == grid]
chosen = c2.multiselect("Runs", [r["run_id"] for r in pool], default=[r["run_id"] for r in pool],
                        format_func=lambda i: _label(by_id[i]), key="xp_runs")
selected = [by_id[i] for i in chosen]
if not selected:
    st.info("Select at least one run.")
    st.stop()

rows = T3.table3_rows(selected)
models = sorted({r["model_used"] for r in selected})
seeds_used = sorted({",".join(map(str, r["seeds"] or [])) for r in selected})
st.markdown("**Table 3 of the selected runs**")
st.caption(f"Mean ± sd over seeds ({'; '.join(seeds_used)}); best of each testing section in bold. "
           f"Model: {', '.join(models)}. Scrub mode: {', '.join(sorted({r['scrub_mode'] or '' for r in selected}))}.")
st.markdown(T3.format_table3(rows, markdown=True))
for n in sorted({r["model_note"] for r in selected if r.get("model_note")}):
    st.caption(n)
csv = pd.DataFrame(T3.table3_csv_rows(T3.full_layout(selected))).to_csv(index=False).encode()
st.download_button("Export CSV", csv, file_name="table3.csv", mime="text/csv", key="xp_csv",
                   help="Every row of the paper's layout: ours (mean, sd) and the paper's published values")

# ---------------------------------------------------------------- bars per metric
st.subheader("Metrics")
bars = pd.DataFrame([{"testing": r["testing"], "fine-tuning": r["fine_tuning"], "metric": T3.METRIC_TITLES[m],
                      "mean": r["cells"][m]["mean"], "sd": r["cells"][m]["sd"]}
                     for r in rows for m in svc.METRICS if r["cells"][m]["mean"] is not None])
tabs = st.tabs([T3.METRIC_TITLES[m] for m in svc.METRICS])
for tab, m in zip(tabs, svc.METRICS):
    data = bars[bars["metric"] == T3.METRIC_TITLES[m]]
    fig = px.bar(data, x="testing", y="mean", color="fine-tuning", error_y="sd", barmode="group",
                 labels={"mean": T3.METRIC_TITLES[m], "testing": "Testing"}, range_y=[0, 1],
                 color_discrete_sequence=figures.PALETTE)
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
                                 name=f"{T3.SECTION_TITLES.get(r['experiment'])} · {T3.cell_title(r)} (seed {c['seed']})"))
    if kind == "roc":
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance"))
    fig.update_layout(title=title, xaxis_title=xt, yaxis_title=yt, height=450, colorway=figures.PALETTE)
    col.plotly_chart(fig, key=f"xp_curve_{kind}")

# ---------------------------------------------------------------- ratio curve
ratio_rows = [r for r in rows if r["experiment"] == "ratio" and r["synthetic_ratio"] is not None]
st.subheader("Ratio test: metric vs share of synthetic trials")
if ratio_rows:
    rmetric = st.selectbox("Metric", svc.METRICS, index=svc.METRICS.index("roc_auc"), format_func=T3.METRIC_TITLES.get,
                           key="xp_ratio_metric")
    data = pd.DataFrame([{"% synthetic": round(r["synthetic_ratio"] * 100), "mean": r["cells"][rmetric]["mean"],
                          "sd": r["cells"][rmetric]["sd"], "model": r["model"]} for r in ratio_rows])
    fig = px.line(data.sort_values("% synthetic"), x="% synthetic", y="mean", error_y="sd", color="model",
                  markers=True, labels={"mean": T3.METRIC_TITLES[rmetric]}, color_discrete_sequence=figures.PALETTE)
    st.plotly_chart(fig, key="xp_ratio_curve")
else:
    st.caption("No ratio-test runs selected.")

with st.expander("Per-seed results"):
    st.dataframe(pd.DataFrame(per_seed), hide_index=True, key="xp_seed_table")
