"""Outputs of `dora-data analyze`: analysis.json, one CSV per series, and Figure 2 as PNGs."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.atomic import write_json_atomic

SCHEMA_VERSION = 1
PANELS = ("lightness", "objects", "classes", "shots")


def write_json(out: Path, results: list[dict], settings: dict, detector: str) -> Path:
    path = out / "analysis.json"
    write_json_atomic(path, {"schema": SCHEMA_VERSION, "detector": detector, "settings": settings, "videos": results})
    return path


def write_csvs(out: Path, results: list[dict]) -> list[Path]:
    rows = {
        "lightness.csv": (["video", "t_s", "L"], [(r["name"], t, v) for r in results
                                                  for t, v in zip(r["lightness"]["t"], r["lightness"]["L"],
                                                                  strict=True)]),
        "objects.csv": (["video", "t_s", "count"], [(r["name"], t, c) for r in results
                                                    for t, c in zip(r["objects"]["t"], r["objects"]["count"],
                                                                    strict=True)]),
        "classes.csv": (["video", "class", "count"], [(r["name"], k, c) for r in results
                                                      for k, c in r["classes"].items()]),
        "shots.csv": (["video", "shot", "start_s", "end_s"], [
            (r["name"], i, a, b) for r in results
            for i, (a, b) in enumerate(zip([0.0, *r["cuts_s"]], [*r["cuts_s"], r["duration_s"]], strict=True))]),
    }
    paths = []
    for name, (header, data) in rows.items():
        p = out / name
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(data)
        paths.append(p)
    return paths


def _draw(ax, panel: str, results: list[dict]) -> None:
    """One panel; video i has colour Ci in every panel. Time in minutes for long videos, else seconds."""
    minutes = max((r["duration_s"] for r in results), default=0) > 600
    unit, scale = ("min", 60.0) if minutes else ("s", 1.0)
    if panel == "lightness":
        for i, r in enumerate(results):
            ax.plot([t / scale for t in r["lightness"]["t"]], r["lightness"]["L"], label=r["name"], lw=1, color=f"C{i}")
        ax.set(xlabel=f"time ({unit})", ylabel="lightness L* / 100", title="(a) lightness", ylim=(0, 1))
    elif panel == "objects":
        for i, r in enumerate(results):
            ax.plot([t / scale for t in r["objects"]["t"]], r["objects"]["count"], label=r["name"], lw=1,
                    color=f"C{i}")
        ax.set(xlabel=f"time ({unit})", ylabel="objects per frame", title="(b) objects per frame")
    elif panel == "classes":
        for i, r in enumerate(results):
            freq = sorted(r["classes"].values(), reverse=True)
            ax.plot(range(1, len(freq) + 1), freq, marker="o", ms=3, color=f"C{i}",
                    label=f"{r['name']} ({len(freq)} classes)")
        ax.set(xlabel="class rank", ylabel="detections", title="(c) class frequency")
        if any(r["classes"] for r in results):
            ax.set(xscale="log", yscale="log")
        else:
            ax.text(0.5, 0.5, "no detections", ha="center", va="center", transform=ax.transAxes)
    elif panel == "shots":
        names = [r["name"] for r in results]
        ax.bar(range(len(names)), [r["shots"] for r in results], color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set(ylabel="number of shots", title="(d) shots")
    if panel != "shots" and results:
        ax.legend(fontsize=7)


def write_figures(out: Path, results: list[dict], detector: str) -> list[Path]:
    """figure.png with the four panels of Figure 2, and panel_<a-d>_<name>.png each on its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, panel in zip(axes.flat, PANELS, strict=True):
        _draw(ax, panel, results)
    fig.suptitle(f"Dataset analysis (Figure 2); detector: {detector}")
    fig.tight_layout()
    fig.savefig(out / "figure.png", dpi=100)
    plt.close(fig)
    paths.append(out / "figure.png")
    for letter, panel in zip("abcd", PANELS, strict=True):
        fig, ax = plt.subplots(figsize=(6, 4))
        _draw(ax, panel, results)
        fig.suptitle(f"detector: {detector}", fontsize=8)
        fig.tight_layout()
        p = out / f"panel_{letter}_{panel}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths
