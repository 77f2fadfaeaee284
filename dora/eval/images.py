"""Labelled image folders (ImageFolder layout) and DINO's evaluation transform, decoded by DALI or torchvision.

Layout: ROOT/train/<class>/..., ROOT/val/<class>/... Files are listed in torchvision's ImageFolder order
(classes sorted, then a sorted recursive walk, same extensions), so feature dumps line up with DINO's.
Val labels are train's class indices looked up by name: DINO builds two separate mappings, so a val
folder missing a class silently shifts every later label. A val class unknown to train is an error.

The evaluation transform (DINO's eval_knn.py / eval_linear.py validation): Resize(256) of the short
side, bicubic, long side int(256 * long / short); CenterCrop(224) at int(round((size - 224) / 2));
ToTensor; ImageNet mean/std. Two decoders give it:
- torchvision: PIL decode + PIL bicubic (a = -0.5, antialiased), exactly DINO's code;
- DALI (`decoders.image`, "mixed" = nvJPEG on a GPU, CPU here; EXIF orientation ignored as PIL
  does): `fn.resize` with INTERP_CUBIC and antialias to the same output size, then the same crop box.
  DALI's cubic is not PIL's bit for bit. Measured on generated photo-like JPEGs, down- and upscaled:
  mean |pixel diff| 0.14/255, max 7/255 (at sharp edges), [CLS] features 1e-3 relative L2; the test
  (tests/test_eval_knn.py) allows mean < 0.5/255, max < 16/255, features < 5e-3.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dora.data import IMAGENET_MEAN, IMAGENET_STD
from pipeline.errors import InputError

# torchvision.datasets.folder.IMG_EXTENSIONS (matched case-insensitively, as torchvision does)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MEAN, STD = IMAGENET_MEAN, IMAGENET_STD  # DINO's evaluation transform


@dataclass
class Split:
    """One split of an image folder: file paths and labels (indices into `classes`, train's names)."""

    root: Path
    classes: list[str]
    paths: list[Path]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.paths)


def _class_dirs(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir())


def _files(folder: Path) -> list[Path]:
    out = []
    for base, _, names in sorted(os.walk(folder, followlinks=True)):
        out += [Path(base) / n for n in sorted(names) if n.lower().endswith(IMG_EXTENSIONS)]
    return out


def scan_split(root: Path, classes: list[str] | None = None) -> Split:
    """The images of `root`/<class>/; with `classes` (train's names) labels map through them by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: folder not found; expected ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg "
                         "(ImageFolder layout)")
    names = _class_dirs(root)
    if not names:
        raise InputError(f"{root}: no class folders; put each class's images in {root}/<class>/")
    if classes is None:
        classes = names
        empty = [c for c in names if not _files(root / c)]
        if empty:
            raise InputError(f"{root / empty[0]}: class folder without images ({', '.join(IMG_EXTENSIONS)}); "
                             "add images or remove the folder")
    else:
        unknown = [c for c in names if c not in classes]
        if unknown:
            raise InputError(f"{root / unknown[0]}: class {unknown[0]!r} is not in the train split "
                             f"({len(unknown)} such); every val class needs a train folder of the same name")
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for c in names:
        files = _files(root / c)
        paths += files
        labels += [index[c]] * len(files)
    if not paths:
        raise InputError(f"{root}: no images ({', '.join(IMG_EXTENSIONS)}) in its class folders")
    return Split(root, list(classes), paths, np.asarray(labels, np.int64))


def load_layout(root: Path) -> tuple[Split, Split]:
    """(train, val) of ROOT in the ImageFolder layout, val labelled through train's class names."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data folder not found; expected ROOT/train/<class>/ and ROOT/val/<class>/")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise InputError(f"{root / split}: missing; --data ROOT needs ROOT/train/<class>/ and ROOT/val/<class>/")
    train = scan_split(root / "train")
    return train, scan_split(root / "val", train.classes)


def one_class_note(n_classes: int, where: str) -> str | None:
    """None, or the note for a labelled set whose train split has one class: every prediction is right."""
    if n_classes >= 2:
        return None
    return (f"{where} has a single class: every image is predicted as it, so the accuracies are 100 % by "
            "construction; add images of other classes for a meaningful score")


def resize_shape(width: int, height: int, resize: int) -> tuple[int, int]:
    """(h, w) of torchvision's Resize(resize) for a width x height image (short side = resize)."""
    if width <= height:
        return int(resize * height / width), resize
    return resize, int(resize * width / height)


def crop_anchor(h: int, w: int, crop: int) -> tuple[int, int]:
    """(top, left) of torchvision's CenterCrop(crop) on an h x w image."""
    return int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))


def eval_transform(resize: int = 256, crop: int = 224):
    """DINO's evaluation transform (torchvision)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(crop),
                      T.ToTensor(), T.Normalize(MEAN, STD)])


class ImageDataset(torch.utils.data.Dataset):
    """(image tensor, index, error) of a Split; an unreadable file gives a zero image and its message,
    which the consumer turns into one error line (an exception raised in a worker would be a traceback)."""

    def __init__(self, split: Split, transform, size: int):
        self.split, self.transform, self.size = split, transform, size

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        from PIL import Image

        path = self.split.paths[i]
        try:
            with Image.open(path) as im:
                x = self.view(im.convert("RGB"), i)
            return x, i, ""
        except (OSError, ValueError, SyntaxError) as e:
            return torch.zeros(3, self.size, self.size), i, f"{path}: not a readable image ({e}); remove or replace it"

    def view(self, img, i: int) -> torch.Tensor:
        """The tensor of image `i` (a PIL RGB image)."""
        return self.transform(img)


def view_seed(epoch_seed: int, i: int) -> int:
    """The seed of image i's training view in the epoch seeded `epoch_seed` (a hash of the pair)."""
    return int(np.random.SeedSequence([epoch_seed % 2**63, i]).generate_state(1, np.uint64)[0] % 2**63)


class TrainViews(ImageDataset):
    """DINO's linear-probe training view (RandomResizedCrop(size) + horizontal flip, torchvision's algorithm
    and resampling: PIL bilinear, antialiased) of image i, drawn from a generator seeded by (epoch_seed, i)
    only: the same views whatever the DataLoader workers, batch size or a resumption."""

    def __init__(self, split: Split, size: int, epoch_seed: int):
        super().__init__(split, None, size)
        self.epoch_seed = epoch_seed

    def view(self, img, i: int) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        from dora.eval.train_views import random_resized_crop

        gen = torch.Generator().manual_seed(view_seed(self.epoch_seed, i))
        top, left, h, w = random_resized_crop(*img.size, gen)
        x = TF.resized_crop(img, top, left, h, w, [self.size, self.size], InterpolationMode.BILINEAR, antialias=True)
        if torch.rand(1, generator=gen).item() < 0.5:
            x = TF.hflip(x)
        return TF.normalize(TF.to_tensor(x), MEAN, STD)


def torch_batches(split: Split, batch_size: int, workers: int, transform, size: int, shuffle: bool = False,
                  generator: torch.Generator | None = None, pin: bool = False,
                  dataset: ImageDataset | None = None,
                  order: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """(images [B, 3, S, S], indices) from torchvision in file order, in `order`, or shuffled with `generator`;
    `dataset` replaces ImageDataset(split, transform, size)."""
    if generator is None:  # never draw the loader's seed from the global RNG (online k-NN must not disturb it)
        generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset or ImageDataset(split, transform, size), batch_size=batch_size,
                                         shuffle=shuffle and order is None, generator=generator,
                                         sampler=None if order is None else [int(i) for i in order],
                                         num_workers=workers, pin_memory=pin, drop_last=False)
    for x, idx, errors in loader:
        bad = [e for e in errors if e]
        if bad:
            raise InputError(bad[0])
        yield x, idx.numpy()


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image ({e}); remove or replace it") from None


class _Feed:
    """DALI external source: per batch, the encoded files, resize sizes [h, w] and crop anchors [y, x]."""

    def __init__(self, split: Split, batch_size: int, resize: int, crop: int):
        self.split, self.bs, self.resize, self.crop = split, batch_size, resize, crop
        self.starts = iter(range(0, len(split), batch_size))
        self.batches: list[list[int]] = []

    def __iter__(self):
        return self

    def __next__(self):
        start = next(self.starts)  # StopIteration ends the DALI epoch
        idx = list(range(start, min(start + self.bs, len(self.split))))
        self.batches.append(idx)
        data, sizes, anchors = [], [], []
        for i in idx:
            path = self.split.paths[i]
            w, h = image_size(path)
            rh, rw = resize_shape(w, h, self.resize)
            data.append(np.fromfile(path, np.uint8))
            sizes.append(np.array([rh, rw], np.float32))
            anchors.append(np.array(crop_anchor(rh, rw, self.crop), np.int32))
        return data, sizes, anchors


def dali_batches(split: Split, batch_size: int, workers: int, device: torch.device, resize: int = 256,
                 crop: int = 224) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """(images [B, 3, crop, crop] on `device`, indices) decoded and transformed by DALI, in file order."""
    from nvidia.dali import fn, pipeline_def, types


    gpu = device.type == "cuda"
    feed = _Feed(split, batch_size, resize, crop)

    @pipeline_def(batch_size=batch_size, num_threads=max(1, workers), device_id=(device.index or 0) if gpu else None,
                  prefetch_queue_depth=2, exec_dynamic=True)
    def pipe():
        data, size, anchor = fn.external_source(source=feed, num_outputs=3, batch=True, parallel=False,
                                                dtype=[types.UINT8, types.FLOAT, types.INT32])
        images = fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                   adjust_orientation=False)
        images = fn.resize(images, size=size, interp_type=types.INTERP_CUBIC, antialias=True)
        images = fn.slice(images, start=anchor, shape=[crop, crop], axis_names="HW")
        return fn.crop_mirror_normalize(images, mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD],
                                        output_layout="CHW", dtype=types.FLOAT)

    yield from run_batches(pipe(), feed, split, device)


def run_batches(p, feed, split: Split, device: torch.device):
    """Build DALI pipeline `p` and yield (batch on `device`, indices into `split`) until `feed` ends;
    an undecodable image becomes an InputError naming it."""
    from dora.data import dali_to_torch

    p.build()
    done = 0
    while True:
        try:
            (out,) = p.run()
        except StopIteration:
            break
        except RuntimeError as e:
            _raise_unreadable(split, list(feed.batches[done]) if done < len(feed.batches) else [], e)
        idx = np.asarray(feed.batches[done])
        done += 1
        yield dali_to_torch(out, device), idx


def _raise_unreadable(split: Split, idx: list[int], error: Exception):
    """Name the file of a batch that DALI could not decode."""
    from PIL import Image

    for i in idx:
        try:
            with Image.open(split.paths[i]) as im:
                im.load()
        except (OSError, ValueError, SyntaxError) as e:
            raise InputError(f"{split.paths[i]}: not a readable image ({e}); remove or replace it") from None
    lines = [ln for ln in str(error).splitlines() if ln.strip() and "Critical error" not in ln]
    raise InputError(f"DALI could not decode a batch of {split.root} ({lines[-1] if lines else error}); "
                     "try --decoder torch") from None


def check_sizes(resize: int, crop: int) -> None:
    if crop > resize:
        raise InputError(f"--crop {crop} is larger than --resize {resize}; the center crop must fit in the resized "
                         "image (DINO: --resize 256 --crop 224)")


def choose_decoder(name: str) -> str:
    """auto: DALI when installed, else torchvision."""
    if name == "auto":
        return "dali" if dali_available() else "torch"
    if name == "dali" and not dali_available():
        raise InputError("--decoder dali: nvidia-dali is not installed; pip install nvidia-dali-cuda120, "
                         "or use --decoder torch")
    if name not in ("dali", "torch"):
        raise InputError(f"--decoder {name!r}: choose auto, dali or torch")
    return name


def eval_batches(split: Split, decoder: str, batch_size: int, workers: int, device: torch.device,
                 resize: int = 256, crop: int = 224) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Batches of `split` under DINO's evaluation transform, in file order, from `decoder` (dali|torch)."""
    if decoder == "dali":
        yield from dali_batches(split, batch_size, workers, device, resize, crop)
        return
    for x, idx in torch_batches(split, batch_size, workers, eval_transform(resize, crop), crop,
                                pin=device.type == "cuda"):
        yield x.to(device, non_blocking=True), idx
