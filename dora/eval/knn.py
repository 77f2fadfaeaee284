"""Weighted k-NN classification on frozen features (DINO's eval_knn.py protocol, Wu et al. 2018).

For a test feature x (L2-normalised) and train features t_j (L2-normalised): s_j = x . t_j (cosine);
the k largest s_j vote for their labels with weight exp(s_j / T); classes are ranked by their summed
votes; top-1 / top-5 are the fractions (in %) of test images whose label is first / among the first
min(5, k) ranked classes that got a vote (TOP5_DEFINITION). That is what DINO's knn_classifier computes:
it sorts 1000 class scores, so when fewer than min(5, k) classes get votes the other slots hold
zero-score classes in its sort's tie order, in practice indices outside a small data set (checked
against its code on random few-class sets). Unlike DINO's script: any number of test images (its chunking
needs >= 100), any number of classes (it hard-codes 1000), k > n_train is clamped, no torch.distributed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dora.checkpoint import save_atomic
from pipeline.errors import InputError
from pipeline.files import save_image_atomic

DUMP_FILES = ("trainfeat.pth", "testfeat.pth", "trainlabels.pth", "testlabels.pth")
CHUNK_ELEMENTS = 2**25  # similarity entries held at once (128 MB in fp32)
TOP5_DEFINITION = ("label among the first min(5, k) classes ranked by summed votes, counting only classes "
                   "that got a vote (DINO's knn_classifier; on fewer than 5 classes top-5 is not 100 % by "
                   "construction)")


@torch.no_grad()
def knn_classify(train_feat: torch.Tensor, train_labels: torch.Tensor, test_feat: torch.Tensor,
                 test_labels: torch.Tensor, k: int, temperature: float = 0.07,
                 num_classes: int | None = None) -> tuple[float, float]:
    """(top-1 %, top-5 %) of the weighted k-NN vote; features must already be L2-normalised."""
    n_train = train_feat.shape[0]
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, n_train)
    train_labels = train_labels.to(train_feat.device)
    test_labels = test_labels.to(train_feat.device)
    bank = train_feat.t()
    top1 = top5 = 0
    chunk = max(1, CHUNK_ELEMENTS // max(n_train, 1))
    n5 = min(5, k, num_classes)  # DINO: narrow(1, 0, min(5, k)) of its 1000 sorted classes
    for start in range(0, test_feat.shape[0], chunk):
        feats = test_feat[start:start + chunk].to(bank.device)
        targets = test_labels[start:start + chunk]
        sim, idx = (feats @ bank).topk(k, dim=1, largest=True, sorted=True)
        neighbours = train_labels[idx]  # [b, k]
        votes = torch.zeros(feats.shape[0], num_classes, device=bank.device, dtype=sim.dtype)
        votes.scatter_add_(1, neighbours, (sim / temperature).exp())
        ranked = votes.argsort(dim=1, descending=True)[:, :n5]
        correct = ranked.eq(targets[:, None]) & (votes.gather(1, ranked) > 0)  # a class without votes is no guess
        top1 += int(correct[:, 0].sum())
        top5 += int(correct.any(dim=1).sum())
    total = test_feat.shape[0]
    return 100.0 * top1 / total, 100.0 * top5 / total


def evaluate(train_feat: torch.Tensor, train_labels: torch.Tensor, test_feat: torch.Tensor,
             test_labels: torch.Tensor, ks: list[int], temperature: float,
             num_classes: int) -> dict[str, dict]:
    """{"k": {"top1", "top5", "k_used"}} for each requested k (k > n_train is clamped to n_train)."""
    out = {}
    for k in ks:
        top1, top5 = knn_classify(train_feat, train_labels, test_feat, test_labels, k, temperature, num_classes)
        out[str(k)] = {"top1": top1, "top5": top5, "k_used": min(k, train_feat.shape[0])}
    return out


def normalize(feat: torch.Tensor) -> torch.Tensor:
    return F.normalize(feat, dim=1, p=2)


def dump(folder: Path, train_feat, test_feat, train_labels, test_labels) -> None:
    """DINO's four files (L2-normalised features, int64 labels), each written atomically."""
    folder = Path(folder)
    for name, t in zip(DUMP_FILES, (train_feat, test_feat, train_labels, test_labels), strict=True):
        save_atomic(t.detach().cpu(), folder / name)


def load_dump(folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_feat, test_feat, train_labels, test_labels) from DINO's four files in `folder`."""
    folder = Path(folder)
    out = []
    for name in DUMP_FILES:
        path = folder / name
        if not path.exists():
            raise InputError(f"{path}: missing; --load-features needs {', '.join(DUMP_FILES)} as written by "
                             "--dump-features or DINO's eval_knn.py --dump_features")
        try:
            t = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unreadable file is the same user error
            raise InputError(f"{path}: not a readable tensor file ({str(e).splitlines()[0]})") from None
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{path}: holds a {type(t).__name__}, expected a tensor")
        out.append(t)
    trf, tef, trl, tel = out
    if trf.ndim != 2 or tef.ndim != 2 or trf.shape[1] != tef.shape[1]:
        raise InputError(f"{folder}: features must be [N, d] with the same d (train {tuple(trf.shape)}, "
                         f"test {tuple(tef.shape)})")
    if trl.shape != (trf.shape[0],) or tel.shape != (tef.shape[0],):
        raise InputError(f"{folder}: labels do not match the features (train {tuple(trl.shape)} for "
                         f"{trf.shape[0]} rows, test {tuple(tel.shape)} for {tef.shape[0]} rows)")
    return trf.float(), tef.float(), trl.long(), tel.long()


def run(encoder, data: Path | None, ks: list[int], temperature: float, batch_size: int, workers: int,
        decoder: str, precision: str = "fp32", resize: int = 256, crop: int = 224, dump_features: Path | None = None,
        load_features: Path | None = None, quiet: bool = False, say=print) -> dict:
    """Extract (or load) features, classify with each k; returns the k-NN part of metrics.json."""
    from dora.eval.features import cls_feature, extract
    from dora.eval.images import eval_batches, load_layout, one_class_note

    rates = {}
    if load_features is not None:
        trf, tef, trl, tel = load_dump(load_features)
        num_classes = int(max(trl.max(), tel.max())) + 1
        trf, tef = trf.to(encoder.device), tef.to(encoder.device)
        classes = None
    else:
        if data is None:
            raise InputError("give --data ROOT (ImageFolder layout) or --load-features DIR")
        train, val = load_layout(data)
        classes, num_classes = train.classes, len(train.classes)
        dim, model, dev = encoder.embed_dim, encoder.model, encoder.device
        feats = []
        for name, split in (("train", train), ("val", val)):
            batches = eval_batches(split, decoder, batch_size, workers, dev, resize, crop)
            f, rates[name] = extract(lambda x: cls_feature(model, x), batches, len(split), dim, dev,
                                     f"features {name}", precision, quiet)
            feats.append(normalize(f))
        trf, tef = feats
        trl, tel = torch.from_numpy(train.labels), torch.from_numpy(val.labels)
        if dump_features is not None:
            dump(dump_features, trf, tef, trl, tel)
    for k in ks:
        if k > trf.shape[0]:
            say(f"note: k={k} is more than the {trf.shape[0]} train images; using k={trf.shape[0]}")
    note = one_class_note(int(trl.unique().numel()), f"{data}/train" if data is not None else str(load_features))
    if note:
        say(f"warning: {note}")
    results = evaluate(trf, trl, tef, tel, ks, temperature, num_classes)
    out = {"temperature": temperature, "n_train": int(trf.shape[0]), "n_val": int(tef.shape[0]),
           "num_classes": num_classes, "results": results, "top5_definition": TOP5_DEFINITION,
           "images_per_s": {k: round(v, 2) for k, v in rates.items()}, **({"note": note} if note else {})}
    if classes is not None:
        out["classes"] = classes
    return out


def k_label(k: str, r: dict) -> str:
    """The k a bar of knn.png stands for: the k used, and the requested one when it was clamped."""
    used = int(r.get("k_used", k))
    return f"k={used}" if used == int(k) else f"k={used}\n(asked {k};\nall train images)"


def knn_figure(results: dict[str, dict], title: str):
    """matplotlib Figure: top-1 and top-5 (%) for each requested k, each bar labelled with the k used."""
    from matplotlib.figure import Figure

    ks = list(results)
    x = range(len(ks))
    clamped = any(int(results[k].get("k_used", k)) != int(k) for k in ks)
    fig = Figure(figsize=(1.4 * len(ks) + 2.5, 3.6 if clamped else 3.2), dpi=100, layout="tight")
    ax = fig.subplots()
    ax.bar([i - 0.2 for i in x], [results[k]["top1"] for k in ks], 0.4, label="top-1")
    ax.bar([i + 0.2 for i in x], [results[k]["top5"] for k in ks], 0.4, label="top-5")
    for i, k in zip(x, ks, strict=True):
        ax.text(i - 0.2, results[k]["top1"], f"{results[k]['top1']:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set(xticks=list(x), ylabel="%", ylim=(0, 105), title=title)
    ax.set_xticklabels([k_label(k, results[k]) for k in ks], fontsize=8 if clamped else None)
    ax.legend(loc="lower right")
    return fig


def plot(results: dict[str, dict], path: Path, title: str) -> Path:
    """PNG: top-1 and top-5 (%) for each k (see `knn_figure`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image_atomic(path, knn_figure(results, title))
    return Path(path)
