"""Object detector back-ends for `dora-data analyze` (Figure 2 b, c of the paper).

A detector is any callable `rgb (H, W, 3 uint8) -> list of class names` with attributes `name` and
`classes` (what it can see; None = open vocabulary). Built in:
  offline            OpenCV's HOG people detector ("person") + CenterFace ("face"); no download
  fasterrcnn_v2 | retinanet_v2 | fcos
                     torchvision COCO detectors (80 classes); weights from the torch hub cache
                     or --weights FILE, never downloaded at run time
  module:function    your own, e.g. an open-vocabulary detector such as Detic (the paper used Detic
                     with 21k ImageNet classes): `function(threshold)` returns such a callable
"""

from __future__ import annotations

import importlib
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import InputError

TORCHVISION = {
    "fasterrcnn_v2": ("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights"),
    "retinanet_v2": ("retinanet_resnet50_fpn_v2", "RetinaNet_ResNet50_FPN_V2_Weights"),
    "fcos": ("fcos_resnet50_fpn", "FCOS_ResNet50_FPN_Weights"),
}
NAMES = ("offline", *TORCHVISION)


class OfflineDetector:
    """People (OpenCV HOG, on a copy 640 px wide) and faces (CenterFace). Sees 2 classes only."""

    name = "offline (OpenCV HOG people + CenterFace faces)"
    classes = ["person", "face"]

    def __init__(self, threshold: float = 0.5):
        from pipeline.faces import FaceDetector, FaceSettings

        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.faces = FaceDetector(FaceSettings(threshold=threshold, detect_short_side=480))
        self.threshold = threshold

    def __call__(self, rgb: np.ndarray) -> list[str]:
        h, w = rgb.shape[:2]
        scale = min(1.0, 640 / w)
        small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        boxes, weights = self.hog.detectMultiScale(gray, winStride=(8, 8), padding=(8, 8), scale=1.05)
        people = int(np.sum(np.asarray(weights).reshape(-1) > self.threshold)) if len(boxes) else 0
        faces = len(self.faces.detect(np.ascontiguousarray(rgb[:, :, ::-1])))
        return ["person"] * people + ["face"] * faces


class TorchvisionDetector:
    """A torchvision COCO detector with weights that are already on disk."""

    def __init__(self, key: str, weights_file: Path | None = None, threshold: float = 0.5):
        import torch
        import torchvision.models.detection as det

        fn_name, enum_name = TORCHVISION[key]
        enum = getattr(det, enum_name).DEFAULT
        path = Path(weights_file) if weights_file else Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        if not path.exists():
            raise InputError(f"{path}: {enum_name} weights not found (nothing is downloaded at run time); on a "
                             f"machine with internet run `python -c \"import torchvision; torchvision.models."
                             f"detection.{fn_name}(weights='DEFAULT')\"` and copy {Path(enum.url).name} into "
                             f"{path.parent}, or pass --weights FILE; or use --detector offline")
        model = getattr(det, fn_name)(weights=None, weights_backbone=None, num_classes=len(enum.meta["categories"]))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model = model.eval()
        self.transform = enum.transforms()
        self.classes = [c for c in enum.meta["categories"] if c not in ("__background__", "N/A")]
        self.categories = enum.meta["categories"]
        self.name = f"torchvision {fn_name} (COCO, {len(self.classes)} classes)"
        self.threshold = threshold

    def __call__(self, rgb: np.ndarray) -> list[str]:
        import torch

        x = self.transform(torch.from_numpy(rgb).permute(2, 0, 1))
        with torch.no_grad():
            out = self.model([x])[0]
        keep = out["scores"] >= self.threshold
        return [self.categories[int(i)] for i in out["labels"][keep]]


def make_detector(spec: str, weights: Path | None = None, threshold: float = 0.5):
    """A detector from its name (see NAMES) or from `module:function`."""
    if spec == "offline":
        return OfflineDetector(threshold)
    if spec in TORCHVISION:
        return TorchvisionDetector(spec, weights, threshold)
    if ":" in spec:
        module, fn = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError) as e:
            raise InputError(f"--detector {spec}: cannot load it ({e}); give module:function") from None
        det = factory(threshold)
        if not callable(det) or not hasattr(det, "name"):
            raise InputError(f"--detector {spec}: {fn}() must return a callable with a `name` attribute")
        return det
    raise InputError(f"--detector {spec!r}: unknown; choose {', '.join(NAMES)} or module:function")
