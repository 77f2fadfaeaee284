"""`dora-data shard` (the write side): work units, cuts, faces, stored frames, assembly into shards."""

from pipeline.shard.assemble import IncompleteVideos, assemble, drop_unfinished
from pipeline.shard.cuts import DETECTORS, CutSettings, CutTracker, analysis_size, shots_from_cuts
from pipeline.shard.faces import BLUR_MODES, FaceDetector, FaceSettings
from pipeline.shard.parts import Part, local_rank, local_world_size, parse_part, part_from_env
from pipeline.shard.run import run_index, run_shard
from pipeline.shard.runlog import PartRun
from pipeline.shard.settings import ShardSettings

__all__ = [
    "assemble", "drop_unfinished", "IncompleteVideos",
    "CutSettings", "CutTracker", "DETECTORS", "analysis_size", "shots_from_cuts", "BLUR_MODES",
    "FaceDetector", "FaceSettings", "run_index", "run_shard", "ShardSettings", "parse_part",
    "Part", "PartRun", "part_from_env", "local_rank", "local_world_size",
]
