"""Outputs of `dora-data analyze`: analysis.json, one CSV per series, and Figure 2 as PNGs."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.analyze.detectors import has_box
from pipeline.files import atomic_open, write_json_atomic

SCHEMA_VERSION = 2
PANELS = ("lightness", "objects", "classes", "shots")


def write_json(out: Path, results: list[dict], settings: dict, detector: str, vocabulary: dict | None) -> Path:
    """analysis.json: settings, detector, vocabulary {name, size, ...} and every input's measures
    (without its per-box detections, which go to detections.csv and detections.png)."""
    path = out / "analysis.json"
    videos = [{k: v for k, v in r.items() if k not in ("detections", "example")} for r in results]
    write_json_atomic(path, {"schema": SCHEMA_VERSION, "detector": detector, "vocabulary": vocabulary,
                             "settings": settings, "videos": videos})
    return path


def write_csvs(out: Path, results: list[dict]) -> list[Path]:
    rows = {
        "lightness.csv": (["video", "t_s", "L"], [(r["name"], t, v) for r in results
                                                  for t, v in zip(r["lightness"]["t"], r["lightness"]["L"],
                                                                  strict=True)]),
        "objects.csv": (["video", "t_s", "count", "unique"], [
            (r["name"], t, c, u) for r in results
            for t, c, u in zip(r["objects"]["t"], r["objects"]["count"], r["objects"]["unique"], strict=True)]),
        "classes.csv": (["video", "class", "count"], [(r["name"], k, c) for r in results
                                                      for k, c in r["classes"].items()]),
        "shots.csv": (["video", "shot", "start_s", "end_s"], [
            (r["name"], i, a, b) for r in results
            for i, (a, b) in enumerate(zip([0.0, *r["cuts_s"]], [*r["cuts_s"], r["duration_s"]], strict=True))]),
        "detections.csv": (["video", "t_s", "class", "score", "x0", "y0", "x1", "y1"], [
            (r["name"], *_blank_nan(row)) for r in results for row in r.get("detections", [])]),
    }
    paths = []
    for name, (header, data) in rows.items():
        p = out / name
        with atomic_open(p, "w") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(data)
        paths.append(p)
    return paths


def _blank_nan(row: tuple) -> tuple:
    """A detection row with NaN (a detector that gives no score or box) as an empty CSV cell."""
    return tuple("" if isinstance(v, float) and v != v else v for v in row)


def legend_label(r: dict) -> str:
    return f"{r.get('label') or r['name']} ({r['unique_classes']} classes)"


def draw_panel(ax, panel: str, results: list[dict]) -> None:
    """One panel; input i has colour Ci in every panel and its label in the legend. Time in minutes
    for long inputs, else seconds."""
    minutes = max((r["duration_s"] for r in results), default=0) > 600
    unit, scale = ("min", 60.0) if minutes else ("s", 1.0)
    name = [r.get("label") or r["name"] for r in results]
    if panel == "lightness":
        for i, r in enumerate(results):
            ax.plot([t / scale for t in r["lightness"]["t"]], r["lightness"]["L"], label=name[i], lw=1, color=f"C{i}")
        ax.set(xlabel=f"time ({unit})", ylabel="lightness L* / 100", title="(a) lightness", ylim=(0, 1))
    elif panel == "objects":
        for i, r in enumerate(results):
            ax.plot([t / scale for t in r["objects"]["t"]], r["objects"]["unique"], label=legend_label(r), lw=1,
                    color=f"C{i}")
        ax.set(xlabel=f"time ({unit})", ylabel="unique objects (classes) per frame",
               title="(b) unique objects per frame")
    elif panel == "classes":
        for i, r in enumerate(results):
            freq = sorted(r["classes"].values(), reverse=True)
            ax.plot(range(1, len(freq) + 1), freq, marker="o", ms=3, color=f"C{i}", label=legend_label(r))
        ax.set(xlabel="class rank", ylabel="detections in the whole video", title="(c) class frequency")
        if any(r["classes"] for r in results):
            ax.set(xscale="log", yscale="log")
        else:
            ax.text(0.5, 0.5, "no detections", ha="center", va="center", transform=ax.transAxes)
    elif panel == "shots":
        ax.bar(range(len(name)), [r["shots"] for r in results], color=[f"C{i}" for i in range(len(name))])
        ax.set_xticks(range(len(name)), name, rotation=30, ha="right", fontsize=7)
        ax.set(ylabel="number of shots", title="(d) shots")
    if panel != "shots" and results:
        ax.legend(fontsize=7)


def write_figures(out: Path, results: list[dict], detector: str) -> list[Path]:
    """figure.png with the four panels of Figure 2, and panel_<a-d>_<name>.png each on its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, p: Path) -> Path:
        with atomic_open(p, "wb") as f:
            fig.savefig(f, dpi=100, format="png")
        plt.close(fig)
        return p

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, panel in zip(axes.flat, PANELS, strict=True):
        draw_panel(ax, panel, results)
    fig.suptitle(f"Dataset analysis (Figure 2); detector: {detector}")
    fig.tight_layout()
    paths = [save(fig, out / "figure.png")]
    for letter, panel in zip("abcd", PANELS, strict=True):
        fig, ax = plt.subplots(figsize=(6, 4))
        draw_panel(ax, panel, results)
        fig.suptitle(f"detector: {detector}", fontsize=8)
        fig.tight_layout()
        paths.append(save(fig, out / f"panel_{letter}_{panel}.png"))
    return paths


def write_examples(out: Path, results: list[dict], detector: str) -> Path:
    """detections.png: for each input, the sample with the most classes, with its boxes and labels (for a
    detector without boxes, the classes it named, in words)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cols = min(3, max(1, len(results)))
    rows = -(-max(1, len(results)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, results, strict=False):
        ex = r["example"]
        if ex["frame"] is None:
            continue
        ax.imshow(ex["frame"])
        dets = ex["detections"]
        boxed = sorted((d for d in dets if has_box(d)), key=lambda d: -d.score)[:25]
        for d in boxed:
            x0, y0, x1, y1 = d.box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1, color="yellow"))
            ax.text(x0, y0, f"{d.label} {d.score:.2f}", fontsize=6, color="black", va="bottom",
                    bbox={"facecolor": "yellow", "alpha": 0.7, "pad": 0.5, "lw": 0})
        unboxed = sorted({d.label for d in dets if not has_box(d)})
        if unboxed:  # a detector that names classes only: say so instead of drawing nothing
            ax.text(0.01, 0.99, "no boxes (the detector gives class names only): " + ", ".join(unboxed[:12]),
                    transform=ax.transAxes, fontsize=6, va="top", wrap=True,
                    bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "lw": 0})
        ax.set_title(f"{r.get('label') or r['name']} at {ex['t']:.1f} s: {len(dets)} objects, "
                     f"{len({d.label for d in dets})} classes", fontsize=8)
    fig.suptitle(f"detector: {detector}", fontsize=8)
    fig.tight_layout()
    p = out / "detections.png"
    with atomic_open(p, "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return p
