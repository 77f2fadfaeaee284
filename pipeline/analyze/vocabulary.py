"""Class vocabularies for open-vocabulary detection in `dora-data analyze` (Figure 2 b, c).

`--vocabulary lvis | coco | in21k | FILE`:
  lvis   the 1203 LVIS v1 categories (shipped: pipeline/analyze/vocab/lvis.txt)
  coco   the 80 COCO detection categories (shipped: pipeline/analyze/vocab/coco.txt)
  in21k  ImageNet-21k (fall 2011, the 21,843 synsets that Detic's 21k vocabulary comes from), named by
         the first WordNet lemma of each synset; built from the synset lists that timm ships, so
         nothing is downloaded. Synsets that share a lemma (crane the bird, crane the machine) become
         one text query: see `Vocabulary.merged`.
  FILE   one class name per line; blank lines and lines starting with '#' are ignored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pipeline.errors import InputError

BUILTIN = ("lvis", "coco", "in21k")


@dataclass(frozen=True)
class Vocabulary:
    name: str  # lvis | coco | in21k | the file's path
    classes: tuple[str, ...]  # distinct class names, in file order
    merged: int = 0  # lines dropped because the same name (ignoring case and spaces) came earlier

    @property
    def sha256(self) -> str:
        """Checksum of the class list (what a text-embedding cache is keyed by)."""
        return hashlib.sha256("\n".join(self.classes).encode()).hexdigest()

    def to_json(self) -> dict:
        return {"name": self.name, "size": len(self.classes), "sha256": self.sha256, "merged_duplicates": self.merged}


def parse_names(lines: list[str], origin: str) -> Vocabulary:
    """Distinct names from text lines: stripped, '#' comments and blank lines skipped, later
    duplicates (compared case-insensitively, runs of spaces as one) dropped."""
    seen, names = set(), []
    for line in lines:
        name = " ".join(line.split())
        if not name or name.startswith("#"):
            continue
        key = name.lower()
        if key not in seen:
            seen.add(key)
            names.append(name)
    n_lines = sum(1 for x in lines if x.strip() and not x.strip().startswith("#"))
    return Vocabulary(origin, tuple(names), n_lines - len(names))


def _in21k_lines() -> list[str]:
    import timm.data

    info = resources.files(timm.data) / "_info"
    lemma = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    synsets = (info / "imagenet21k_goog_synsets.txt").read_text().split()
    return [lemma[s].split(",")[0].strip() for s in synsets]


def load_vocabulary(spec: str) -> Vocabulary:
    """The vocabulary named by `spec` (see the module docstring); one-line InputError when unusable."""
    if spec in ("lvis", "coco"):
        text = (resources.files("pipeline.analyze") / "vocab" / f"{spec}.txt").read_text()
        return parse_names(text.splitlines(), spec)
    if spec == "in21k":
        v = parse_names(_in21k_lines(), spec)
        return v
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--vocabulary {spec}: no such file; give lvis, coco, in21k or a text file with one "
                         "class name per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; save the vocabulary as UTF-8, one class name per line") from None
    v = parse_names(text.splitlines(), str(path))
    if not v.classes:
        raise InputError(f"{path}: no class names in this vocabulary file; write one class name per line")
    return v
