"""Plotly figures of the pages (analysis histograms and maps). Colours: the Okabe-Ito palette, safe for
the common colour-vision deficiencies; real trials are blue circles, synthetic ones orange diamonds."""
from __future__ import annotations

from typing import Any

# Okabe & Ito (2008), "Color Universal Design": distinguishable with protanopia, deuteranopia, tritanopia.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
REAL, SYNTHETIC = "#0072B2", "#E69F00"
PAIR_COLORS = {"real-real": REAL, "synthetic-synthetic": SYNTHETIC, "real-synthetic": "#009E73"}
KIND_COLORS = {"real": REAL, "synthetic": SYNTHETIC}
COLOR_BY = {"Real vs synthetic": "kind", "Label": "label", "Intervention": "intervention",
            "Synthetic source": "source", "Validation status": "validation_status"}


def histogram_figure(quality: dict[str, Any]):
    """Overlaid histograms of the sampled cosine similarities; n, mean and sd in the legend."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, stats in quality["cosine"].items():
        if not stats.get("n"):
            continue
        fig.add_trace(go.Histogram(
            x=stats["values"], name=f"{name} (n {stats['n']:,}, mean {stats['mean']:.3f}, sd {stats['sd']:.3f})",
            xbins=dict(start=-0.2, end=1.0, size=0.02), opacity=0.55, marker_color=PAIR_COLORS.get(name)))
        fig.add_vline(x=stats["mean"], line_dash="dash", line_color=PAIR_COLORS.get(name))
    fig.update_layout(barmode="overlay", xaxis_title="cosine similarity", yaxis_title="pairs",
                      legend=dict(orientation="h", y=1.12), margin=dict(t=40, b=10))
    return fig


def scatter_figure(points: list[dict[str, Any]], color_by: str = "kind", title: str = ""):
    """Interactive map: one trace per colour value; real trials are circles, synthetic ones diamonds.
    Hover shows the NCT id, title and intervention; customdata carries the point's id for selection."""
    import plotly.graph_objects as go

    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(str(p.get(color_by) or "unknown"), []).append(p)
    fig = go.Figure()
    for k, (value, pts) in enumerate(sorted(groups.items(), key=lambda kv: -len(kv[1]))):
        # WebGL only where SVG gets slow: SVG works everywhere (also without a GPU).
        trace = go.Scattergl if len(points) > 3000 else go.Scatter
        colour = KIND_COLORS.get(value) if color_by == "kind" else PALETTE[k % len(PALETTE)]
        fig.add_trace(trace(
            x=[p["x"] for p in pts], y=[p["y"] for p in pts], mode="markers", name=f"{value} ({len(pts)})",
            marker=dict(size=7, opacity=0.8, color=colour, line=dict(width=0.5, color="#333333"),
                        symbol=["circle" if p["kind"] == "real" else "diamond" for p in pts]),
            customdata=[[p["id"], p["nct_id"] or p["id"], (p["title"] or "")[:90], p["intervention"] or "-",
                         p["kind"], p["label"]] for p in pts],
            hovertemplate=("<b>%{customdata[1]}</b> (%{customdata[4]})<br>%{customdata[2]}<br>"
                           "Intervention: %{customdata[3]}<br>Label: %{customdata[5]}<extra></extra>"),
        ))
    fig.update_layout(title=title, legend_title_text=color_by.replace("_", " "), height=620,
                      dragmode="lasso", clickmode="event+select", margin=dict(t=40 if title else 10, b=10),
                      xaxis=dict(showticklabels=False, title=""), yaxis=dict(showticklabels=False, title=""))
    return fig
