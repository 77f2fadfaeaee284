"""What `dora-data analyze` reads: videos and folders of images, each with the label its curves carry.

`--label NAME=PATH` (repeatable) or `--label FILE.csv` (rows `path,label`) names a dataset in the
side-by-side figure; a labelled path is analysed even when it is not also given as an input.
A folder holding images and no videos is one image sequence (an image dataset): its images, in name
order, are consecutive samples.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.video import VIDEO_EXTS, resolve_inputs, video_name

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Input:
    name: str  # unique name (file stem or folder name)
    path: Path
    label: str  # what the figure's legend calls it (default: name)
    kind: str = "video"  # video | images


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _is_image_folder(p: Path) -> bool:
    if not p.is_dir() or not images_in(p):
        return False
    return not any(q.suffix.lower() in VIDEO_EXTS for q in p.iterdir() if q.is_file())


def parse_labels(specs: tuple[str, ...] | list[str]) -> list[tuple[str, Path]]:
    """(label, path) pairs from NAME=PATH values and CSV files of `path,label` rows (a header is allowed)."""
    pairs: list[tuple[str, Path]] = []
    for spec in specs:
        if "=" in spec:
            label, path = spec.split("=", 1)
            pairs.append((label.strip(), Path(path.strip())))
            continue
        f = Path(spec)
        if not f.is_file():
            raise InputError(f"--label {spec}: give NAME=PATH, or a CSV file of path,label rows")
        with open(f, newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.reader(fh), 1):
                if not row or not "".join(row).strip() or row[0].strip().startswith("#"):
                    continue
                if [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                    continue
                if len(row) != 2:
                    raise InputError(f"{f}: line {i} has {len(row)} fields; write one `path,label` per line")
                path = Path(row[0].strip())
                pairs.append((row[1].strip(), path if path.is_absolute() else f.parent / path))
    for label, path in pairs:
        if not label or len(label) > 64 or any(c in label for c in "\n\r\t"):
            raise InputError(f"--label {label!r}={path}: a label is 1-64 characters on one line")
    return pairs


def resolve(inputs: list[str], label_specs: tuple[str, ...] | list[str]) -> list[Input]:
    """Every sequence to analyse, labelled, in the order given (inputs first, then labelled paths)."""
    pairs = parse_labels(label_specs)
    by_path = {}
    for label, path in pairs:
        key = path.resolve()
        if key in by_path and by_path[key] != label:
            raise InputError(f"{path}: labelled twice ({by_path[key]!r} and {label!r}); give one label")
        by_path[key] = label
    found: list[Input] = []
    for text in [*inputs, *(str(p) for _, p in pairs)]:
        p = Path(text)
        if _is_image_folder(p):
            items = [Input(video_name(p.resolve().name), p, "", "images")]
        else:
            items = [Input(s.name, s.path, "") for s in resolve_inputs([text])]
        label = by_path.get(p.resolve())
        if label is not None and len(items) > 1:
            raise InputError(f"{p}: the label {label!r} names a folder of {len(items)} videos; label each file")
        for it in items:
            if any(x.path.resolve() == it.path.resolve() for x in found):
                continue
            lab = label if label is not None else by_path.get(it.path.resolve(), it.name)
            found.append(Input(it.name, it.path, lab, it.kind))
    names, labels = {}, {}
    for it in found:
        if it.name in names:
            raise InputError(f"{it.path}: same name {it.name!r} as {names[it.name]}; rename one of them")
        if it.label in labels:
            raise InputError(f"{it.path}: same label {it.label!r} as {labels[it.label]}; give each input its own")
        names[it.name], labels[it.label] = it.path, it.path
    return found
