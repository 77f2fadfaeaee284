"""Semantic-segmentation folders and the views the linear probe trains and is scored on.

Two layouts (`load_seg_layout`):
- ADE20K (SceneParsing, `ADEChallengeData2016.zip`): ROOT/ADEChallengeData2016/ or ROOT itself holding
  images/{training,validation}/*.jpg and annotations/{training,validation}/*.png. As mmseg's
  ADE20KDataset: 150 classes, reduce_zero_label (label 0, "other", becomes 255 = ignored; 1..150
  become 0..149).
- a generic folder: ROOT/images/{train,val}/ (any image type, sub-folders allowed), ROOT/annotations/
  {train,val}/ with one single-channel PNG per image at the same relative path (stem + .png), and
  ROOT/classes.txt (one class name per line). Label values index into classes.txt; 255 is ignored.

Images are decoded by OpenCV (as mmseg's LoadImageFromFile) and converted to RGB; label maps by PIL
(as its LoadAnnotations: an indexed PNG gives its indices). A missing split, an image without its
annotation, an unreadable file, a label map of another size than its image and a label value outside
the classes (and not 255) are one-line errors naming the file (the last three when the file is read).

Training view of sample k (mmseg's ADE20K pipeline in dinov2's linear config, less PhotoMetricDistortion):
rescale keeping the aspect ratio so that the short side is crop x r, r uniform in `ratio` (image
bilinear, labels nearest, as mmcv.imrescale), a crop x crop random crop re-drawn up to 10 times while
one class covers >= cat_max_ratio of its labelled pixels, a horizontal flip with probability 1/2,
ImageNet normalisation, and padding to crop x crop (image 0, label 255). Sample k is image perm_e[k mod n]
with e = k div n and perm_e a permutation drawn from (seed, e); its augmentation is drawn from (seed, k):
no number depends on the loader's workers or on a resumption.
Validation view: the whole image rescaled so that its short side is `short` (mmseg's test Resize with
img_scale (inf, crop)), with its label map at the original size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from dora.data import IMAGENET_MEAN, IMAGENET_STD
from dora.eval.seg_metrics import IGNORE
from pipeline.errors import InputError

IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# mmseg's ADE20KDataset class names, in label order (annotation value - 1)
ADE_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag")
MEAN = np.asarray(IMAGENET_MEAN, np.float32) * 255
STD = np.asarray(IMAGENET_STD, np.float32) * 255


@dataclass
class SegSplit:
    """One split: image and annotation paths (pairs) and how to read the labels."""

    name: str
    root: Path  # the split's image folder
    images: list[Path]
    labels: list[Path]
    num_classes: int
    reduce_zero_label: bool

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class SegLayout:
    """A segmentation folder: which layout, its class names, and its train and val splits."""

    kind: str  # ade20k | folder
    root: Path
    classes: list[str]
    train: SegSplit
    val: SegSplit


def _pairs(images: Path, annotations: Path, what: str) -> tuple[list[Path], list[Path]]:
    """(images, annotations) of a split: every image under `images` and its `annotations` PNG."""
    for folder in (images, annotations):
        if not folder.is_dir():
            raise InputError(f"{folder}: missing; {what}")
    paths = sorted(Path(base) / n for base, _, names in os.walk(images, followlinks=True) for n in names
                   if n.lower().endswith(IMAGE_TYPES))
    if not paths:
        raise InputError(f"{images}: no images ({', '.join(IMAGE_TYPES)}); {what}")
    labels = []
    for p in paths:
        lab = annotations / p.relative_to(images).with_suffix(".png")
        if not lab.is_file():
            raise InputError(f"{p}: no annotation {lab}; every image needs its label PNG (same relative path, "
                             ".png)")
        labels.append(lab)
    return paths, labels


def load_seg_layout(root: Path) -> SegLayout:
    """The layout of ROOT: ADE20K (ROOT/ADEChallengeData2016 or ROOT itself) or a generic folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data folder not found; expected ADEChallengeData2016/ or images/, "
                         "annotations/ and classes.txt")
    ade = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    if (ade / "images" / "training").is_dir() or (ade / "images" / "validation").is_dir():
        what = "ADE20K needs images/{training,validation}/*.jpg and annotations/{training,validation}/*.png"
        splits = [SegSplit(s, ade / "images" / s, *_pairs(ade / "images" / s, ade / "annotations" / s, what),
                           num_classes=len(ADE_CLASSES), reduce_zero_label=True)
                  for s in ("training", "validation")]
        return SegLayout("ade20k", ade, list(ADE_CLASSES), *splits)
    what = "--data ROOT needs images/{train,val}/, annotations/{train,val}/ and classes.txt (or ADE20K's layout)"
    classes_txt = root / "classes.txt"
    if not classes_txt.is_file():
        raise InputError(f"{classes_txt}: missing; {what}")
    try:
        classes = [ln.strip() for ln in classes_txt.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{classes_txt}: not readable ({e})") from None
    if not 1 <= len(classes) <= IGNORE:
        raise InputError(f"{classes_txt}: {len(classes)} class names; give 1 to {IGNORE} (one per line; label "
                         f"{IGNORE} is ignored)")
    splits = [SegSplit(s, root / "images" / s, *_pairs(root / "images" / s, root / "annotations" / s, what),
                       num_classes=len(classes), reduce_zero_label=False) for s in ("train", "val")]
    return SegLayout("folder", root, classes, *splits)


def read_image(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB (OpenCV decode, as mmseg)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: not a readable image; remove or replace it")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: Path, split: SegSplit) -> np.ndarray:
    """[H, W] uint8 class indices (255 = ignore) of an annotation PNG, reduce_zero_label applied for ADE20K."""
    try:
        with Image.open(path) as im:
            lab = np.array(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable annotation ({e}); remove or replace it") from None
    if lab.ndim != 2:
        raise InputError(f"{path}: a {lab.ndim}-channel image; annotations are single-channel PNGs of class indices")
    top = int(lab.max()) if lab.size else 0
    if split.reduce_zero_label:  # mmseg: 0 -> 255, v -> v - 1
        if top > split.num_classes:
            raise InputError(f"{path}: label value {top} is outside 0..{split.num_classes} (ADE20K: 0 = other, "
                             f"1..{split.num_classes} = classes)")
        lab = lab.astype(np.int64) - 1
        lab[lab < 0] = IGNORE
        return lab.astype(np.uint8)
    bad = lab[(lab >= split.num_classes) & (lab != IGNORE)]
    if bad.size:
        raise InputError(f"{path}: label value {int(bad.max())} is outside 0..{split.num_classes - 1} "
                         f"(classes.txt lists {split.num_classes}) and not {IGNORE} (ignore)")
    return lab.astype(np.uint8)


def read_pair(split: SegSplit, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Image i of `split` and its label map, checked to be the same size."""
    img, lab = read_image(split.images[i]), read_label(split.labels[i], split)
    if img.shape[:2] != lab.shape:
        raise InputError(f"{split.labels[i]}: label map {lab.shape[1]}x{lab.shape[0]} but its image "
                         f"{split.images[i].name} is {img.shape[1]}x{img.shape[0]}")
    return img, lab


def rescale_shape(h: int, w: int, short: float) -> tuple[int, int]:
    """(h, w) of mmcv.imrescale to scale (inf, short): the short side becomes `short`, ratio kept."""
    f = short / min(h, w)
    return int(h * f + 0.5), int(w * f + 0.5)


def rescale(img: np.ndarray, lab: np.ndarray | None, short: float):
    """Image (bilinear) and label map (nearest) rescaled to short side `short`."""
    h, w = rescale_shape(*img.shape[:2], short)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return img, None if lab is None else cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)


def random_crop(lab: np.ndarray, crop: int, rng: np.random.Generator, cat_max_ratio: float) -> tuple[int, int]:
    """(top, left) of mmseg's RandomCrop: re-drawn up to 10 times while one class covers >= cat_max_ratio
    of the crop's labelled pixels (or it has fewer than 2 classes)."""
    def draw() -> tuple[int, int]:
        return int(rng.integers(0, max(lab.shape[0] - crop, 0) + 1)), int(rng.integers(0, max(lab.shape[1] - crop,
                                                                                               0) + 1))

    y, x = draw()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            values, counts = np.unique(lab[y:y + crop, x:x + crop], return_counts=True)
            counts = counts[values != IGNORE]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            y, x = draw()
    return y, x


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """[3, H, W] float32, ImageNet-normalised (mmseg's Normalize with to_rgb on an RGB array)."""
    return torch.from_numpy(((img.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1).copy())


def train_view(img: np.ndarray, lab: np.ndarray, crop: int, ratio: tuple[float, float], cat_max_ratio: float,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [3, crop, crop], labels [crop, crop] int64) of one training sample (see the module doc)."""
    r = rng.random() * (ratio[1] - ratio[0]) + ratio[0]
    img, lab = rescale(img, lab, crop * r)
    y, x = random_crop(lab, crop, rng, cat_max_ratio)
    img, lab = img[y:y + crop, x:x + crop], lab[y:y + crop, x:x + crop]
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    out_x = torch.zeros(3, crop, crop)
    out_y = torch.full((crop, crop), IGNORE, dtype=torch.int64)
    out_x[:, :img.shape[0], :img.shape[1]] = to_tensor(img)
    out_y[:lab.shape[0], :lab.shape[1]] = torch.from_numpy(lab.astype(np.int64))
    return out_x, out_y


class TrainCrops(torch.utils.data.Dataset):
    """Sample k -> (image, labels, error): the training view of the k-th sample of the run's stream; a
    file that cannot be used gives its one-line message (raised by the consumer, not inside a worker)."""

    def __init__(self, split: SegSplit, crop: int, ratio: tuple[float, float], cat_max_ratio: float, seed: int):
        self.split, self.crop, self.ratio, self.cat, self.seed = split, crop, ratio, cat_max_ratio, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def image_of(self, k: int) -> int:
        """The image index of sample k."""
        n = len(self.split)
        epoch = k // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(n))
        return int(self._perm[1][k % n])

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int):
        i = self.image_of(k)
        try:
            img, lab = read_pair(self.split, i)
        except InputError as e:
            return torch.zeros(3, self.crop, self.crop), torch.full((self.crop, self.crop), IGNORE), str(e)
        x, y = train_view(img, lab, self.crop, self.ratio, self.cat, np.random.default_rng([self.seed, 1, k]))
        return x, y, ""


class ValImages(torch.utils.data.Dataset):
    """Image i -> (image rescaled to short side `short` [3, h, w], labels at the original size [H, W] int64,
    i, error)."""

    def __init__(self, split: SegSplit, short: int):
        self.split, self.short = split, short

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        try:
            img, lab = read_pair(self.split, i)
        except InputError as e:
            return torch.zeros(3, 1, 1), torch.zeros(1, 1, dtype=torch.int64), i, str(e)
        img, _ = rescale(img, None, self.short)
        return to_tensor(img), torch.from_numpy(lab.astype(np.int64)), i, ""


def first_error(errors) -> None:
    """Raise the first non-empty message of a batch as an InputError."""
    bad = [e for e in errors if e]
    if bad:
        raise InputError(bad[0])
