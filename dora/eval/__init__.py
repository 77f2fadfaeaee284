"""The paper's frozen-feature evaluations (k-NN, linear probe, DAVIS propagation, object discovery) and a
linear semantic-segmentation probe."""

from dora.eval.common import RunRecord, load_encoder, pick_device
from dora.eval.davis import run as run_davis
from dora.eval.davis_data import read_sequences
from dora.eval.davis_score import check_scorable, score_results
from dora.eval.discovery_run import MEAN as DISCOVERY_MEAN
from dora.eval.discovery_run import STD as DISCOVERY_STD
from dora.eval.discovery_run import run_corloc, run_jaccard
from dora.eval.images import check_sizes, choose_decoder
from dora.eval.knn import plot as plot_knn
from dora.eval.knn import run as run_knn
from dora.eval.linear import LinearParams, LinearProbe
from dora.eval.online_knn import OnlineKnn
from dora.eval.propagation import PropagationCfg
from dora.eval.seg_data import load_seg_layout
from dora.eval.seg_metrics import SegScores, intersect_and_union
from dora.eval.segment import SegmentProbe, SegParams, seg_iters, seg_warmup
from dora.eval.teacher import attention_sheet, teacher_model
from dora.eval.voc import read_detection, read_segmentation

__all__ = [
    "attention_sheet", "teacher_model",
    "run_davis", "DISCOVERY_MEAN", "DISCOVERY_STD", "run_corloc", "run_jaccard", "plot_knn", "run_knn",
    "RunRecord", "load_encoder", "pick_device", "read_sequences", "score_results", "check_scorable", "check_sizes",
    "choose_decoder", "LinearParams", "LinearProbe", "OnlineKnn", "PropagationCfg", "read_detection",
    "read_segmentation", "load_seg_layout", "SegScores", "intersect_and_union", "SegmentProbe", "SegParams",
    "seg_iters", "seg_warmup",
]
