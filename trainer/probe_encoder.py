"""The probe's image encoder (trainer/probe.py): a frozen CLIP or SigLIP vision tower, built small from config or
loaded from a checkpoint, and its pooled features per image, cached per image sha256 and encoder fingerprint."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from schema.files import file_sha256, write_atomic
from trainer.errors import TrainerError


def _encoder_classes() -> dict[str, type]:
    from transformers import CLIPVisionModel, SiglipVisionModel

    return {
        "clip": CLIPVisionModel,
        "clip_vision_model": CLIPVisionModel,
        "siglip": SiglipVisionModel,
        "siglip_vision_model": SiglipVisionModel,
    }


def build_encoder(image_size: int, seed: int):
    """A small CLIP vision tower with random weights (seeded) and its image processor: what tests and the demo
    use, since nothing may be downloaded there. Random features still carry colour and layout."""
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=max(8, image_size // 8),
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return CLIPVisionModel(config).eval(), processor


def load_encoder(source: str | Path):
    """A pretrained CLIP or SigLIP vision tower and its image processor, from a local folder or a hub id (the
    hub is only reached where the machine has network)."""
    from transformers import AutoConfig, AutoImageProcessor

    try:
        config = AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError) as e:
        raise TrainerError(
            f"cannot load the image encoder {source!r} ({str(e).splitlines()[0]}); give a local folder holding a "
            "CLIP or SigLIP checkpoint (config.json, weights, preprocessor_config.json) or a hub id on a machine "
            "with network"
        ) from None
    classes = _encoder_classes()
    if config.model_type not in classes:
        raise TrainerError(
            f"{source!r} is a {config.model_type!r} model; the probe takes a CLIP or SigLIP vision tower "
            f"(model types: {', '.join(classes)})"
        )
    model = classes[config.model_type].from_pretrained(str(source), dtype=torch.float32)
    processor = AutoImageProcessor.from_pretrained(str(source), backend="pil")
    return model.eval(), processor


_PREPROCESSING = (
    "size",
    "crop_size",
    "do_resize",
    "do_center_crop",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "resample",
)


def encoder_fingerprint(model: nn.Module, processor) -> str:
    """What the cached features depend on: the weights and the preprocessing. Changing either (another
    checkpoint under the same folder name) gives another fingerprint, so stale features are never reused."""
    digest = hashlib.blake2b(digest_size=16)
    settings = {name: getattr(processor, name, None) for name in _PREPROCESSING}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureExtractor:
    """Pooled encoder features for image files, through a cache of one .npy per image sha256 (the same
    picture under another name, or in the next export, is not encoded again)."""

    def __init__(self, model: nn.Module, processor, cache_dir: Path | None, *, batch_size: int = 16):
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.fingerprint = encoder_fingerprint(model, processor)
        self.cache = cache_dir / self.fingerprint if cache_dir is not None else None
        self.encoded = 0  # images run through the encoder (not found in the cache)

    def _cached(self, sha: str) -> Path | None:
        return None if self.cache is None else self.cache / sha[:2] / f"{sha}.npy"

    @torch.inference_mode()
    def encode(self, images: list[Image.Image]) -> np.ndarray:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return self.model(pixel_values=pixels).pooler_output.float().numpy()

    def __call__(self, paths: list[Path], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        shas = [file_sha256(p) for p in paths]
        features: dict[str, np.ndarray] = {}
        for sha in set(shas):
            cached = self._cached(sha)
            if cached is not None and cached.is_file():
                try:
                    features[sha] = np.load(cached)
                except (OSError, ValueError):
                    pass  # a damaged cache file is encoded again and overwritten
        todo = list({sha: path for sha, path in zip(shas, paths, strict=True) if sha not in features}.items())
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            images = []
            for _, path in batch:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            for (sha, _), vector in zip(batch, self.encode(images), strict=True):
                features[sha] = vector
                cached = self._cached(sha)
                if cached is not None:
                    buffer = io.BytesIO()
                    np.save(buffer, vector)
                    write_atomic(cached, buffer.getvalue())
            self.encoded += len(batch)
            if on_batch:
                on_batch(min(start + self.batch_size, len(todo)))
        return np.stack([features[sha] for sha in shas]) if shas else np.zeros((0, 0), np.float32)
