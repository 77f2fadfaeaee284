"""Time to shard the whole Walking Tours set from measured per-core (and assumed per-GPU) rates.

Prints the markdown table that BENCHMARKS.md quotes under "The plan for the whole dataset": one 2-core
box, one 64-core node, one 8-GPU node, 4 CPU nodes, 4 GPU nodes. Nothing is measured here; it is
arithmetic on the rates given. Plug in your own: the `src-s/wall-s` that `python bench/shard_bench.py`
prints on your machine goes in as `--rate R --rate-cores N` (N = the cores it ran on).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Measured 2-core rates, the 8 s rows of this section: (input s, decode-only floor wall s, speed / floor speed).
SIDE_BY_SIDE = 'BENCHMARKS.md "Shard stage, two 4K inputs side by side", 8 s rows'
SETTINGS = {
    "vp9-fp32": (8.0, 9.23, 0.51), "vp9-int8": (8.0, 9.23, 0.59), "vp9-nofaces": (8.0, 9.23, 0.75),
    "h264-fp32": (8.0, 4.19, 0.26), "h264-int8": (8.0, 4.19, 0.35), "h264-nofaces": (8.0, 4.19, 0.51),
}
PAPER_S = 10 * 5880.0  # paper §3.1 / Table 1: 10 videos, 1 h 38 min (5,880 s) on average
GPU_RATE = 10.0  # source-s per wall-s per GPU: an assumption (600 4K frames/s), no GPU was lent to measure it
MB_PER_SRC_S = 10 * 0.200  # 10 stored frames per source-s × ~200 KB JPEG (BENCHMARKS.md, Loader section)


def rate_of(setting: str) -> float:
    """Source-s per wall-s of a measured 2-core setting: seconds / (floor wall s / fraction of floor)."""
    sec, floor_s, frac = SETTINGS[setting]
    return sec * frac / floor_s


def cpu_rest(codec: str, cores: int = 2) -> float:
    """Core-s per source-s outside decoding and faces, the work that stays on the CPU when NVDEC decodes
    and CenterFace runs on CUDA: (no-faces wall - floor wall) × cores / seconds, same rows as SETTINGS.
    An upper bound: it includes colour conversion and resizes that a GPU path may take over."""
    sec, floor_s, _ = SETTINGS[f"{codec}-nofaces"]
    return (sec / rate_of(f"{codec}-nofaces") - floor_s) * cores / sec


def units_of(durations: list[float], segment_s: float) -> int:
    """Work units `dora-data shard` cuts the videos into (pipeline/shard/units.py plan_units)."""
    return sum(max(1, math.ceil(d / segment_s - 0.05)) for d in durations)


def cpu_wall(total_s: float, n_units: int, segment_s: float, cores: int, core_rate: float) -> float:
    """Wall s on `cores` cores, one unit per core at `core_rate` source-s per core-s: the larger of
    perfect sharing and whole rounds of units (the last round may leave cores idle)."""
    return max(total_s / (cores * core_rate), math.ceil(n_units / cores) * segment_s / core_rate)


def durations_from(archive: Path) -> list[float]:
    """Real durations from `dora-data fetch`'s archive.jsonl (the last record of each name)."""
    if not archive.is_file():
        sys.exit(f"error: {archive}: no such archive; run `dora-data fetch` first or leave out --archive")
    recs = [json.loads(line) for line in archive.read_text().splitlines() if line.strip()]
    last = {r["name"]: float(r["duration_s"]) for r in recs}
    if not last:
        sys.exit(f"error: {archive}: no videos recorded")
    return list(last.values())


def plan(a: argparse.Namespace) -> tuple[dict, list[dict]]:
    """The header facts and one dict per row (rates, their labels, hours)."""
    durs = durations_from(a.archive) if a.archive else [a.source_s / a.videos] * a.videos
    total, n_units = sum(durs), units_of(durs, a.segment_s)
    measured = a.rate is None
    rate = rate_of(a.setting) if measured else a.rate
    cores0 = 2 if measured else a.rate_cores
    core = rate / cores0
    rest = cpu_rest(a.setting.split("-")[0]) if a.cpu_cost is None else a.cpu_cost
    src = f"{SIDE_BY_SIDE}, {a.setting}" if measured else f"--rate {a.rate} on {cores0} cores (given)"
    lab = "measured" if measured else "given"
    gpu_rate = GPU_RATE if a.gpu_rate is None else a.gpu_rate
    gpu_lab = "estimated, not measured" if a.gpu_rate is None else "given"
    rest_src = f"{SIDE_BY_SIDE}, no faces minus floor (measured, an upper bound)" if a.cpu_cost is None else "given"
    out_gb, fr = total * a.mb_per_src_s / 1e3, a.source_fps

    def up(row: dict, nodes: int) -> dict:
        """`--out s3://` (pipeline/store/upload.py): each node uploads its units as they finish, overlapping the
        run; then `index` on one machine pulls the (nodes - 1)/nodes it lacks and uploads the shards."""
        link_h = out_gb * 8 / a.link_gbit / 3600
        row.update(upload_h=link_h / nodes, index_h=link_h * (2 - 1 / nodes))
        return {**row, "total_h": max(row["shard_h"], row["upload_h"]) + row["index_h"]}

    def cpu_row(name: str, cores: int, nodes: int) -> dict:
        h = cpu_wall(total, n_units, a.segment_s, cores, core) / 3600
        whole = f"{rate:.3f} src-s/s on {cores0} cores = " if cores == cores0 else ""
        return up({"setup": name, "rate": f"{whole}{core:.3f} src-s/s per core = {core * fr:.1f} frames/s ({lab})",
                   "from": src + ("" if cores == cores0 else f"; / {cores0} cores, linear in cores (assumed)"),
                   "shard_h": h}, nodes)

    def gpu_row(name: str, nodes: int) -> dict:
        g, c = total / (nodes * a.gpus * gpu_rate), total * rest / (nodes * a.gpu_node_cores)
        gpu_from = "GPU: assumed, bench/gpu_check.sh measures it in one call" if a.gpu_rate is None else "GPU: given"
        return up({"setup": name, "rate": f"{gpu_rate:g} src-s/s per GPU = {gpu_rate * fr:.0f} frames/s ({gpu_lab}); "
                   f"CPU part {rest:.2f} core-s per src-s on {a.gpu_node_cores} cores/node (cores assumed)",
                   "from": f"{gpu_from}; CPU part: {rest_src}",
                   "shard_h": max(g, c) / 3600, "gpu_h": g / 3600, "cpu_h": c / 3600}, nodes)

    rows = [cpu_row(f"one {cores0}-core box ({'this machine' if measured else 'the measuring one'})", cores0, 1),
            cpu_row(f"one {a.cores}-core node", a.cores, 1),
            gpu_row(f"one node, {a.gpus} GPUs (NVDEC + CenterFace on CUDA)", 1),
            cpu_row(f"{a.nodes} × {a.cores}-core CPU nodes", a.nodes * a.cores, a.nodes),
            gpu_row(f"{a.nodes} × {a.gpus}-GPU nodes", a.nodes)]
    head = {"source_s": total, "videos": len(durs), "units": n_units, "output_gb": out_gb,
            "durations": "dora-data fetch archive" if a.archive else "paper §3.1 average × videos"}
    return head, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="vp9-fp32",
                    help="measured 2-core rate to use (VP9 = what dora-data fetch downloads; fp32 = --blur-faces)")
    ap.add_argument("--rate", type=float, help="your measured source-s per wall-s (bench/shard_bench.py)")
    ap.add_argument("--rate-cores", type=int, default=2, help="cores the --rate was measured on")
    ap.add_argument("--source-s", type=float, default=PAPER_S, help="total source seconds")
    ap.add_argument("--videos", type=int, default=10, help="videos the source seconds are split into")
    ap.add_argument("--archive", type=Path, help="data/raw/archive.jsonl: use the real durations instead")
    ap.add_argument("--source-fps", type=float, default=60.0)
    ap.add_argument("--segment-s", type=float, default=120.0, help="dora-data shard --segment-s")
    ap.add_argument("--cores", type=int, default=64, help="cores of one CPU node")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per GPU node")
    ap.add_argument("--gpu-rate", type=float, help=f"source-s per wall-s per GPU [default: {GPU_RATE:g}, assumed]")
    ap.add_argument("--gpu-node-cores", type=int, default=64, help="CPU cores of one GPU node (assumed)")
    ap.add_argument("--cpu-cost", type=float, help="core-s per source-s left on the CPU of a GPU node")
    ap.add_argument("--mb-per-src-s", type=float, default=MB_PER_SRC_S, help="shard MB per source second")
    ap.add_argument("--link-gbit", type=float, default=1.0, help="upload link per node, Gbit/s (assumed)")
    ap.add_argument("--json", action="store_true", help="print the header and rows as JSON")
    a = ap.parse_args()
    head, rows = plan(a)
    if a.json:
        print(json.dumps({"head": head, "rows": rows}, indent=1))
        return
    print(f"source: {head['source_s']:,.0f} s = {head['source_s'] / 3600:.2f} h in {head['videos']} videos "
          f"({head['durations']}), {head['units']} units of {a.segment_s:g} s; shards {head['output_gb']:.1f} GB "
          f"({a.mb_per_src_s:g} MB per source-s), uploaded at {a.link_gbit:g} Gbit/s per node (assumed)\n")
    print("| setup | rate used | where it comes from | shard h | unit upload h | index h | total h |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        extra = f" (GPU {r['gpu_h']:.2f}, CPU {r['cpu_h']:.2f})" if "gpu_h" in r else ""
        print(f"| {r['setup']} | {r['rate']} | {r['from']} | {r['shard_h']:.2f}{extra} | {r['upload_h']:.2f} "
              f"| {r['index_h']:.2f} | {r['total_h']:.2f} |")
    print("\nAll hours are estimated (rates × assumptions); total = max(shard, unit upload) + index.")


if __name__ == "__main__":
    main()
