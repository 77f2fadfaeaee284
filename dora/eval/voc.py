"""The Pascal VOC 2007/2012 folder layout: image lists, XML boxes, segmentation PNGs.

ROOT is VOCdevkit, VOCdevkit/VOC<year> or a folder holding JPEGImages/, Annotations/*.xml and
ImageSets/{Main,Segmentation}/<set>.txt (and SegmentationClass/*.png for VOC 2012 segmentation).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import InputError


@dataclass
class VocImage:
    id: str
    image: Path
    boxes: np.ndarray  # [n, 4] float x1, y1, x2, y2 in pixel-edge coordinates (VOC's 1-based x1, y1 minus 1)
    names: list[str] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)


def find_root(root: Path, year: int) -> Path:
    """The VOC<year> folder under ROOT (ROOT itself, ROOT/VOC<year> or ROOT/VOCdevkit/VOC<year>)."""
    root = Path(root)
    for cand in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise InputError(f"{root}: no JPEGImages folder (looked in it, VOC{year}/ and VOCdevkit/VOC{year}/); "
                     "--voc must be a Pascal VOC folder")


def read_ids(root: Path, image_set: str, kind: str = "Main") -> list[str]:
    """Image ids of ImageSets/<kind>/<image_set>.txt."""
    path = root / "ImageSets" / kind / f"{image_set}.txt"
    if not path.exists():
        raise InputError(f"{path}: image-set file missing; check --set / --year or the VOC folder")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise InputError(f"{path}: lists no image")
    return ids


def parse_xml(path: Path) -> tuple[np.ndarray, list[str], list[bool], list[bool]]:
    """Boxes [n, 4] (x1 - 1, y1 - 1, x2, y2: VOC's inclusive 1-based pixels as edges), names, difficult,
    truncated. A box with xmin > xmax or ymin > ymax is an InputError (before any work is done)."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as e:
        raise InputError(f"{path}: not a readable VOC annotation ({e})") from None
    boxes, names, diff, trunc = [], [], [], []
    for obj in tree.getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            raise InputError(f"{path}: an <object> without <bndbox>")
        try:
            x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise InputError(f"{path}: a <bndbox> without numeric xmin/ymin/xmax/ymax") from None
        name = (obj.findtext("name") or "").strip()
        for lo, hi, a, b in (("xmin", "xmax", x1, x2), ("ymin", "ymax", y1, y2)):
            if a > b:  # LOST would keep it as a box no prediction can match; it is a broken annotation
                raise InputError(f"{path}: object {name!r} box (xmin, ymin, xmax, ymax) = ({x1:g}, {y1:g}, {x2:g}, "
                                 f"{y2:g}) has {lo} {a:g} > {hi} {b:g}; fix the annotation")
        boxes.append([int(x1) - 1, int(y1) - 1, int(x2), int(y2)])
        names.append(name)
        diff.append((obj.findtext("difficult") or "0").strip() == "1")
        trunc.append((obj.findtext("truncated") or "0").strip() == "1")
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), names, diff, trunc


def read_detection(root: Path, year: int, image_set: str, kind: str = "Main") -> list[VocImage]:
    """Every image of the set with its ground-truth boxes (all objects, difficult and truncated included,
    as LOST counts them). An image without an XML file or without boxes is an InputError."""
    voc = find_root(root, year)
    out = []
    for i in read_ids(voc, image_set, kind):
        img, xml = voc / "JPEGImages" / f"{i}.jpg", voc / "Annotations" / f"{i}.xml"
        if not img.exists():
            raise InputError(f"{img}: listed in ImageSets/{kind}/{image_set}.txt but missing")
        if not xml.exists():
            raise InputError(f"{xml}: annotation missing for listed image {i}")
        boxes, names, diff, trunc = parse_xml(xml)
        if len(boxes) == 0:
            raise InputError(f"{xml}: no <object> boxes; CorLoc needs at least one per image")
        out.append(VocImage(i, img, boxes, names, diff, trunc))
    return out


def read_segmentation(root: Path, image_set: str = "val") -> list[tuple[str, Path, Path]]:
    """(id, JPEG, SegmentationClass PNG) of VOC 2012's ImageSets/Segmentation/<image_set>.txt."""
    voc = find_root(root, 2012)
    out = []
    for i in read_ids(voc, image_set, "Segmentation"):
        img, png = voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png"
        for p in (img, png):
            if not p.exists():
                raise InputError(f"{p}: listed in ImageSets/Segmentation/{image_set}.txt but missing")
        out.append((i, img, png))
    return out
