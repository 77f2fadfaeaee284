"""`dora-data shard` (the write side): work units, cuts, faces, stored frames, assembly into shards."""

from pipeline.shard.assemble import IncompleteVideos, assemble, drop_unfinished
from pipeline.shard.cuts import DETECTORS, CutSettings, CutTracker, analysis_size, shots_from_cuts
from pipeline.shard.faces import BLUR_MODES, FaceDetector, FaceSettings
from pipeline.shard.run import run_shard
from pipeline.shard.settings import ShardSettings
from pipeline.shard.units import parse_part

__all__ = [
    "assemble", "drop_unfinished", "IncompleteVideos",
    "CutSettings", "CutTracker", "DETECTORS", "analysis_size", "shots_from_cuts", "BLUR_MODES",
    "FaceDetector", "FaceSettings", "run_shard", "ShardSettings", "parse_part",
]
