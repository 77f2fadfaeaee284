"""Object detector back-ends for `dora-data analyze` (Figure 2 b, c of the paper).

A detector has `name`, `classes` (what it can see; None = open vocabulary) and either
`detect(frames) -> [[Detection, ...], ...]` (a batch of RGB uint8 frames) or, for plug-ins,
`__call__(rgb) -> list of class names`. An optional `input_size` asks for frames whose long side is
that many pixels. Built in:
  owlv2 | owlvit     open-vocabulary OWLv2 / OWL-ViT (Hugging Face transformers) with --vocabulary
                     lvis | coco | in21k | FILE; weights from the Hugging Face cache, downloaded on first
                     use unless --offline (see pipeline/analyze/owl.py)
  offline            OpenCV's HOG people detector ("person") + CenterFace ("face"); no download
  fasterrcnn_v2 | retinanet_v2 | fcos
                     torchvision COCO detectors (80 classes); weights through torchvision's weights API
                     (cached in $TORCH_HOME/hub/checkpoints, downloaded on first use unless --offline)
                     or --weights FILE
  module:function    your own: `function(threshold)` returns such a detector
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import InputError

TORCHVISION = {
    "fasterrcnn_v2": ("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights"),
    "retinanet_v2": ("retinanet_resnet50_fpn_v2", "RetinaNet_ResNet50_FPN_V2_Weights"),
    "fcos": ("fcos_resnet50_fpn", "FCOS_ResNet50_FPN_Weights"),
}
OWL = ("owlv2", "owlvit")
NAMES = ("offline", *OWL, *TORCHVISION)
DEFAULT_THRESHOLD = {"owlv2": 0.2, "owlvit": 0.2}  # others: 0.5


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the frame given to the detector


@dataclass(frozen=True)
class DetectorOptions:
    weights: str | None = None  # torchvision: a local weights file
    threshold: float | None = None  # None: the detector's default
    vocabulary: str = "lvis"
    model: str | None = None  # OWL: a Hugging Face model id or a local folder
    offline: bool = False  # never download weights
    device: str = "auto"
    nms_iou: float = 0.5
    cache_dir: str | None = None  # text-embedding cache (default: ~/.cache/dora-wt)
    quiet: bool = False


class OfflineDetector:
    """People (OpenCV HOG, on a copy 640 px wide) and faces (CenterFace). Sees 2 classes only.

    Boxes are in pixels of the frame given to `detect`. A person's score is the HOG SVM's margin (not a
    probability; kept above the threshold), a face's is CenterFace's confidence.
    """

    name = "offline (OpenCV HOG people + CenterFace faces)"
    classes = ["person", "face"]

    def __init__(self, threshold: float = 0.5):
        from pipeline.shard import FaceDetector, FaceSettings

        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.faces = FaceDetector(FaceSettings(threshold=threshold, detect_short_side=480))
        self.threshold = threshold

    def detect_one(self, rgb: np.ndarray) -> list[Detection]:
        """The people and faces of one RGB frame, with their boxes and scores."""
        h, w = rgb.shape[:2]
        scale = min(1.0, 640 / w)
        small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        boxes, weights = self.hog.detectMultiScale(gray, winStride=(8, 8), padding=(8, 8), scale=1.05)
        found = []
        for (x, y, bw, bh), score in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1),
                                         strict=True):
            if score > self.threshold:  # HOG boxes are in the 640 px copy: back to the frame's pixels
                box = tuple(round(float(v) / scale, 1) for v in (x, y, x + bw, y + bh))
                found.append(Detection("person", round(float(score), 4), box))
        for x0, y0, x1, y1, score in self.faces.detect(np.ascontiguousarray(rgb[:, :, ::-1])):
            found.append(Detection("face", round(float(score), 4), tuple(round(float(v), 1) for v in (x0, y0, x1, y1))))
        return found

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return [self.detect_one(f) for f in frames]


def torchvision_state_dict(key: str, weights_file: Path | None, offline: bool, quiet: bool = True) -> dict:
    """The weights of a torchvision COCO detector: --weights FILE, else torchvision's weights API
    (the file in $TORCH_HOME/hub/checkpoints, downloaded there first unless `offline`)."""
    import torch
    import torchvision.models.detection as det

    fn_name, enum_name = TORCHVISION[key]
    enum = getattr(det, enum_name).DEFAULT
    fname = Path(enum.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / fname
    howto = (f"on a machine with internet run `python -c \"import torchvision; torchvision.models.detection."
             f"{fn_name}(weights='DEFAULT')\"` and copy {fname} into {cached.parent}, or pass --weights FILE")
    if weights_file is not None:
        if not Path(weights_file).is_file():
            raise InputError(f"{weights_file}: {enum_name} weights not found; {howto}")
        path = Path(weights_file)
    elif cached.is_file():
        path = cached
    elif offline:
        raise InputError(f"{cached}: {enum_name} weights not found and --offline forbids downloading; {howto}")
    else:
        try:
            return enum.get_state_dict(progress=not quiet, check_hash=True)
        except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad download fails its hash check
            reason = str(getattr(e, "reason", e)).splitlines()[0][:120]
            raise InputError(f"{cached}: {enum_name} weights not found and downloading {enum.url} failed "
                             f"({reason}); {howto}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path}: not a readable {enum_name} weights file ({type(e).__name__}); {howto}") from None


class TorchvisionDetector:
    """A torchvision COCO detector (see `torchvision_state_dict` for where its weights come from)."""

    def __init__(self, key: str, weights_file: Path | None = None, threshold: float = 0.5, offline: bool = False,
                 quiet: bool = True):
        import torchvision.models.detection as det

        fn_name, enum_name = TORCHVISION[key]
        enum = getattr(det, enum_name).DEFAULT
        state = torchvision_state_dict(key, weights_file, offline, quiet)
        model = getattr(det, fn_name)(weights=None, weights_backbone=None, num_classes=len(enum.meta["categories"]))
        try:
            model.load_state_dict(state)
        except RuntimeError:
            raise InputError(f"{weights_file}: these are not {fn_name} weights; give that model's weights file") \
                from None
        self.model = model.eval()
        self.transform = enum.transforms()
        self.classes = [c for c in enum.meta["categories"] if c not in ("__background__", "N/A")]
        self.categories = enum.meta["categories"]
        self.name = f"torchvision {fn_name} (COCO, {len(self.classes)} classes)"
        self.threshold = threshold

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        import torch

        xs = [self.transform(torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)) for f in frames]
        with torch.inference_mode():
            outs = self.model(xs)
        return [[Detection(self.categories[int(c)], round(float(s), 4), tuple(round(float(v), 1) for v in b))
                 for b, c, s in zip(o["boxes"], o["labels"], o["scores"], strict=True) if s >= self.threshold]
                for o in outs]


NO_BOX = (float("nan"),) * 4


def has_box(d: Detection) -> bool:
    """False for the detections of a plug-in that names classes only (no box, no score)."""
    return d.box[0] == d.box[0]


def detect_batch(det, frames: list[np.ndarray]) -> list[list[Detection]]:
    """Run any detector on a batch; plug-ins that return class names only get no box and no score (NaN),
    which detections.csv writes as empty cells."""
    if hasattr(det, "detect"):
        return det.detect(frames)
    return [[Detection(str(x), float("nan"), NO_BOX) for x in det(f)] for f in frames]


def threshold_for(spec: str, opts: DetectorOptions) -> float:
    return opts.threshold if opts.threshold is not None else DEFAULT_THRESHOLD.get(spec, 0.5)


def make_detector(spec: str, opts: DetectorOptions | None = None):
    """A detector from its name (see NAMES) or from `module:function`."""
    opts = opts or DetectorOptions()
    threshold = threshold_for(spec, opts)
    if spec == "offline":
        return OfflineDetector(threshold)
    if spec in OWL:
        from pipeline.analyze.owl import MODELS, OwlDetector
        from pipeline.analyze.vocabulary import load_vocabulary

        return OwlDetector(opts.model or MODELS[spec], load_vocabulary(opts.vocabulary), threshold, opts.nms_iou,
                           opts.device, opts.offline, Path(opts.cache_dir) if opts.cache_dir else None)
    if spec in TORCHVISION:
        return TorchvisionDetector(spec, Path(opts.weights) if opts.weights else None, threshold, opts.offline,
                                   opts.quiet)
    if ":" in spec:
        module, fn = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError) as e:
            raise InputError(f"--detector {spec}: cannot load it ({e}); give module:function") from None
        det = factory(threshold)
        if not (callable(det) or hasattr(det, "detect")) or not hasattr(det, "name"):
            raise InputError(f"--detector {spec}: {fn}() must return a callable with a `name` attribute")
        return det
    raise InputError(f"--detector {spec!r}: unknown; choose {', '.join(NAMES)} or module:function")
