"""Open-vocabulary detection with OWLv2 / OWL-ViT through Hugging Face `transformers`.

Each image patch of OWL predicts one box and one embedding; a class is a text query
("a photo of a {name}") embedded once by the text tower. The score of a patch for a class is
sigmoid((cos(patch embedding, text embedding) + shift) * scale), shift and scale predicted per patch
(the library's class head). Because scale > 0, the best class of a patch is the one with the highest
cosine, so we take the maximum over the vocabulary in chunks (21k in21k queries never make a
(patches x 21k) logit tensor) and apply shift/scale to that maximum: the same scores as
`Owlv2ForObjectDetection.class_predictor` followed by a max over queries (checked in the tests).
Boxes above the threshold then go through class-agnostic NMS, so one object counts once.

Weights come through `from_pretrained` and the Hugging Face cache (downloaded on first use);
`offline=True` (or HF_HUB_OFFLINE=1) only reads the cache. Text embeddings are cached on disk,
keyed by the text tower's weights, the prompt and the vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from pipeline.analyze.vocabulary import Vocabulary
from pipeline.errors import InputError
from pipeline.files import atomic_open

MODELS = {"owlv2": "google/owlv2-base-patch16-ensemble", "owlvit": "google/owlvit-base-patch32"}
PROMPT = "a photo of a {}"
TEXT_BATCH = 256
QUERY_CHUNK = 4096
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """Where text embeddings are kept: $DORA_WT_CACHE, else $XDG_CACHE_HOME/dora-wt, else ~/.cache/dora-wt."""
    if os.environ.get("DORA_WT_CACHE"):
        return Path(os.environ["DORA_WT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dora-wt"


def _load(model_id: str, offline: bool):
    """(model, tokenizer, image processor) from a folder or the Hugging Face cache/hub."""
    from transformers import AutoImageProcessor, AutoModelForZeroShotObjectDetection, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:  # the hub's retry warnings would hide the one-line error below
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:
        pass
    local = Path(model_id).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise InputError(f"--model {model_id}: this folder holds no config.json; give a folder saved with "
                         "save_pretrained() or a Hugging Face model id such as " + MODELS["owlv2"])
    try:
        kw = {"local_files_only": offline}
        model = AutoModelForZeroShotObjectDetection.from_pretrained(model_id, **kw)
        tokenizer = AutoTokenizer.from_pretrained(model_id, **kw)
        processor = AutoImageProcessor.from_pretrained(model_id, **kw)
    except (OSError, ValueError) as e:
        from huggingface_hub.constants import HF_HUB_CACHE

        offline = offline or os.environ.get("HF_HUB_OFFLINE") == "1"
        why = "--offline forbids downloading" if offline else f"downloading failed ({str(e).splitlines()[0][:160]})"
        folder = "models--" + model_id.replace("/", "--")
        raise InputError(f"{model_id}: weights not in the Hugging Face cache {HF_HUB_CACHE} and {why}; on a machine "
                         f"with internet run `hf download {model_id}` and copy {folder} from its cache into "
                         f"{HF_HUB_CACHE}{' (or run once without --offline)' if offline else ''}, or pass "
                         "--model FOLDER") from None
    if model.config.model_type not in ("owlv2", "owlvit"):
        raise InputError(f"--model {model_id}: a {model.config.model_type} model; give an OWLv2 or OWL-ViT model")
    return model.eval(), tokenizer, processor


class OwlDetector:
    """OWLv2 / OWL-ViT with a fixed vocabulary; `detect(frames)` runs one batch."""

    def __init__(self, model_id: str, vocab: Vocabulary, threshold: float = 0.2, nms_iou: float = 0.5,
                 device: str = "auto", offline: bool = False, cache_dir: Path | None = None):
        import torch

        self.model, self.tokenizer, self.processor = _load(model_id, offline)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device)
        self.core = getattr(self.model, self.model.base_model_prefix)
        self.pad_square = self.model.config.model_type == "owlv2"  # OWLv2 pads to a square, OWL-ViT stretches
        self.input_size = int(self.model.config.vision_config.image_size)
        self.vocab, self.threshold, self.nms_iou = vocab, threshold, nms_iou
        self.classes = list(vocab.classes)
        kind = "OWLv2" if self.pad_square else "OWL-ViT"
        self.name = f"{kind} {model_id}, vocabulary {vocab.name} ({len(self.classes)} classes)"
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.text, self.text_from_cache = self._text_embeddings()

    def cache_key(self) -> str:
        """Text towers differ in their weights: the key hashes the text projection, prompt and vocabulary."""
        w = b"".join(p.detach().float().cpu().numpy().tobytes() for p in
                     (self.core.text_projection.weight, self.core.text_model.embeddings.token_embedding.weight))
        meta = json.dumps({"v": CACHE_VERSION, "type": self.model.config.model_type, "prompt": PROMPT,
                           "vocab": self.vocab.sha256, "max_len": self._max_len()})
        return hashlib.sha256(w + meta.encode()).hexdigest()[:32]

    def _max_len(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def embed_text(self, names: list[str]):
        """L2-normalised projected text embeddings of PROMPT.format(name), one row per name."""
        import torch

        rows = []
        for i in range(0, len(names), TEXT_BATCH):
            tok = self.tokenizer([PROMPT.format(n) for n in names[i:i + TEXT_BATCH]], padding="max_length",
                                 truncation=True, max_length=self._max_len(), return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.core.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
                rows.append(self.core.text_projection(out.pooler_output).float())
        emb = torch.cat(rows)
        return emb / (emb.norm(dim=-1, keepdim=True) + 1e-6)

    def _text_embeddings(self):
        import torch

        path = self.cache_dir / "text-embeddings" / f"{self.cache_key()}.pt"
        if path.is_file():
            try:
                saved = torch.load(path, map_location=self.device, weights_only=True)
                if tuple(saved["classes"]) == self.vocab.classes:
                    return saved["emb"].float(), True
            except Exception:  # a damaged cache file is recomputed
                pass
        emb = self.embed_text(self.classes)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as f:
                torch.save({"classes": self.classes, "emb": emb.cpu()}, f)
        except OSError:
            pass  # an unwritable cache only costs time
        return emb, False

    def scores(self, pixel_values):
        """(boxes cxcywh in [0, 1], best class index, score) for every patch of a batch."""
        import torch

        m, head = self.model, self.model.class_head
        with torch.inference_mode():
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                feature_map = m.image_embedder(pixel_values=pixel_values)[0]
                b, h, w, d = feature_map.shape
                feats = feature_map.reshape(b, h * w, d)
                boxes = m.box_predictor(feats, feature_map)
                emb, shift, scale = head.dense0(feats), head.logit_shift(feats), head.logit_scale(feats)
            boxes, emb, shift, scale = boxes.float(), emb.float(), shift.float()[..., 0], scale.float()[..., 0]
            emb = emb / (emb.norm(dim=-1, keepdim=True) + 1e-6)  # the class head's scoring, in fp32
            best, idx = None, None
            for i in range(0, self.text.shape[0], QUERY_CHUNK):
                v, j = (emb @ self.text[i:i + QUERY_CHUNK].T).max(dim=-1)
                if best is None:
                    best, idx = v, j
                else:
                    better = v > best
                    best, idx = torch.where(better, v, best), torch.where(better, j + i, idx)
            score = torch.sigmoid((best + shift) * (head.elu(scale) + 1))
        return boxes, idx, score

    def detect(self, frames: list[np.ndarray]) -> list[list]:
        """Detections (label, score, box x0 y0 x1 y1 in the frame's pixels) for each RGB frame."""
        import torch
        from torchvision.ops import box_convert, nms

        from pipeline.analyze.detectors import Detection

        pv = self.processor(images=list(frames), return_tensors="pt")["pixel_values"].to(self.device)
        boxes, idx, score = self.scores(pv)
        out = []
        for k, frame in enumerate(frames):
            fh, fw = frame.shape[:2]
            sx, sy = (max(fh, fw), max(fh, fw)) if self.pad_square else (fw, fh)
            keep = score[k] >= self.threshold
            b = box_convert(boxes[k][keep], "cxcywh", "xyxy") * torch.tensor([sx, sy, sx, sy], device=boxes.device)
            b[:, 0::2] = b[:, 0::2].clamp(0, fw)
            b[:, 1::2] = b[:, 1::2].clamp(0, fh)
            s, c = score[k][keep], idx[k][keep]
            order = nms(b, s, self.nms_iou) if len(s) else torch.zeros(0, dtype=torch.long)
            out.append([Detection(self.classes[int(c[i])], round(float(s[i]), 4),
                                  tuple(round(float(x), 1) for x in b[i])) for i in order])
        return out
