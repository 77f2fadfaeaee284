"""`dora-data shard --face-provider` / `--decode-device` on a machine without CUDA (issue 21, point 3).

`cuda` that cannot run is refused in one line before any work; `auto` runs on the CPU and says so; the
device is recorded but never part of the options compared between runs. The GPU side (NVDEC bytes, the
CUDA face pass) is checked by bench/shard_gpu.py on a lent GPU machine, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.shard.faces import cuda_provider_problem, session_providers
from pipeline.shard.segment import _resize
from pipeline.shard.settings import ShardSettings
from pipeline.video.hwaccel import as_software, cuda_decode_problem, gpu_index
from pipeline.video.samples import sample_video
from tests.conftest import run_cli
from tests.evaldata import one_error_line
from tests.videos import decode_all

TINY = ["--workers", "1", "--quiet", "--fps", "4", "--clip-frames", "2", "--clip-stride-s", "0.5"]
no_cuda_faces = pytest.mark.skipif(cuda_provider_problem() is None, reason="CenterFace can run on CUDA here")
no_cuda_decode = pytest.mark.skipif(cuda_decode_problem(0) is None, reason="NVDEC decoding can run here")


def _settings(out: Path) -> dict:
    return json.loads((out / "dataset.json").read_text())["settings"]


@no_cuda_faces
def test_face_provider_cuda_refused_before_any_work(carphone, tmp_path):
    out = tmp_path / "o"
    line = one_error_line(run_cli("shard", carphone, "--out", out, "--blur-faces", "--face-provider", "cuda", *TINY))
    assert line.startswith("error: --face-provider cuda: ") and "--face-provider cpu" in line, line
    assert "CUDAExecutionProvider" in line or "no CUDA device" in line, line
    assert not out.exists()  # refused before the folder was claimed: nothing half-written


@no_cuda_faces
def test_face_provider_auto_runs_on_cpu_and_says_so(carphone, tmp_path):
    out = tmp_path / "o"
    r = run_cli("shard", carphone, "--out", out, "--blur-faces", "--face-provider", "auto", *TINY)
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stdout.splitlines() if ln.startswith("note: --face-provider auto")]
    assert len(notes) == 1 and "CenterFace on the CPU" in notes[0], r.stdout
    assert _settings(out)["faces"]["provider"] == "cpu"  # the choice is recorded
    assert sum(v["faces_blurred"] for v in json.loads((out / "dataset.json").read_text())["videos"]) > 0


@no_cuda_decode
def test_decode_device_cuda_refused_before_any_work(carphone, tmp_path):
    out = tmp_path / "o"
    line = one_error_line(run_cli("shard", carphone, "--out", out, "--decode-device", "cuda", *TINY))
    assert line.startswith("error: --decode-device cuda: ") and "--decode-device cpu" in line, line
    assert not out.exists()


@no_cuda_decode
def test_decode_device_auto_runs_on_cpu_with_the_same_bytes(carphone, tmp_path):
    outs = {}
    for device in ("cpu", "auto"):
        outs[device] = tmp_path / device
        r = run_cli("shard", carphone, "--out", outs[device], "--decode-device", device, *TINY)
        assert r.returncode == 0, r.stderr
        said = [ln for ln in r.stdout.splitlines() if ln.startswith("note: --decode-device auto")]
        assert len(said) == (device == "auto") and all("decoding on the CPU" in ln for ln in said), r.stdout
        assert _settings(outs[device])["decode_device"] == "cpu"
    shards = sorted(p.name for p in (outs["cpu"] / "shards").iterdir())
    assert shards and shards == sorted(p.name for p in (outs["auto"] / "shards").iterdir())
    for name in shards:
        assert (outs["cpu"] / "shards" / name).read_bytes() == (outs["auto"] / "shards" / name).read_bytes()


def test_devices_are_not_compared_between_runs():
    """A folder begun on one machine can be finished on another: where the work runs is no shard option."""
    base = ShardSettings()
    gpu = ShardSettings(decode_device="cuda", faces=base.faces.__class__(provider="cuda"))
    assert base.differences(gpu) == [] and gpu.differences(base) == []
    assert ShardSettings(fps=5.0, decode_device="cuda").differences(base) == ["fps"]


def test_cuda_provider_options_name_the_local_rank_device():
    """LOCAL_RANK (torchrun), else SLURM_LOCALID (srun), else 0 picks the device, modulo the visible ones."""
    cuda = "CUDAExecutionProvider"
    assert session_providers(cuda, {"LOCAL_RANK": "3"}, n_devices=8) == [(cuda, {"device_id": 3}),
                                                                         "CPUExecutionProvider"]
    assert session_providers(cuda, {"SLURM_LOCALID": "1", "RANK": "9"}, n_devices=8)[0] == (cuda, {"device_id": 1})
    assert session_providers(cuda, {"LOCAL_RANK": "2", "SLURM_LOCALID": "5"}, n_devices=8)[0][1] == {"device_id": 2}
    assert session_providers(cuda, {}, n_devices=8)[0][1] == {"device_id": 0}
    assert session_providers(cuda, {"SLURM_LOCALID": "5"}, n_devices=4)[0][1] == {"device_id": 1}  # one GPU per task
    assert session_providers("CPUExecutionProvider", {"LOCAL_RANK": "3"}) == ["CPUExecutionProvider"]
    assert gpu_index(1, n_devices=1) == 0 and gpu_index(9, n_devices=4) == 1


@pytest.mark.parametrize(("pix_fmt", "gpu_fmt"), [("yuv420p", "nv12"), ("yuvj420p", "nv12"),
                                                  ("yuv420p10le", "p010le")])
def test_frames_from_the_gpu_are_laid_out_as_the_software_decoder_gives_them(tmp_path, pix_fmt, gpu_fmt):
    """NVDEC hands frames over as nv12 / p010: laid out anew in the software decoder's format, the resized
    stored pixels (any size) and timestamps are those of the software path, bit for bit. The GPU frames are
    made here from software frames by a lossless re-layout (the same samples, as NVDEC would give them)."""
    _, frames = decode_all(sample_video("carphone_pristine.mp4"))
    src = tmp_path / f"{pix_fmt}.mp4"
    with av.open(str(src), "w") as out:  # tests.videos.encode writes yuv420p only
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 176, 144, pix_fmt, {"crf": "18"}
        for i, img in enumerate(frames[:10]):
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    full = "JPEG" if pix_fmt.startswith("yuvj") else None
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.format.name == pix_fmt  # what open_on_device reads
        for f in c.decode(video=0):
            gpu = f.reformat(format=gpu_fmt, src_color_range=full, dst_color_range=full)
            back = as_software(gpu, pix_fmt)
            assert back.format.name == pix_fmt and back.pts == f.pts
            assert np.array_equal(back.to_ndarray(), f.to_ndarray())
            for size in [(176, 144), (88, 72), (100, 82)]:
                assert np.array_equal(_resize(back, size), _resize(f, size))
