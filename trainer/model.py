"""The model the trainer trains: Qwen2.5-VL with FDLinear in its vision tower, a tiny builder for the CPU
preset (model, byte-level BPE tokenizer trained on the export's own text, image-only processor), and the
loader for a pretrained checkpoint (the 7B preset).

FDLinear settings live in `config.vision_config.skinflow_fdlinear` ({"layers": [...] | None, "targets":
[...], "num_bases": K, "reduction": r}); `SkinflowQwen2_5_VL.__init__` patches the tower from them, so
`save_pretrained` / `from_pretrained` round-trip the layers (tests compare the whole state_dict).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from trainer.config import LORA_TARGETS, MLP_TARGETS
from trainer.fdlinear import FDLinear, patch_vision_tower

FD_KEY = "skinflow_fdlinear"
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen2-VL's chat layout, reduced to what the trainer sends: text and image parts, generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class SkinflowQwen2_5_VL(Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL whose vision tower carries FDLinear layers where its config says so."""

    def __init__(self, config: Qwen2_5_VLConfig):
        super().__init__(config)
        settings = getattr(config.vision_config, FD_KEY, None)
        if settings:
            patch_vision_tower(self.model.visual, **settings)

    def _init_weights(self, module: nn.Module) -> None:
        # Parameters a checkpoint does not hold are initialised here; FDLinear's own defaults are the
        # right ones (the generic init would draw random gates and a random spectrum).
        if isinstance(module, FDLinear):
            module.reset_gates()
            return
        super()._init_weights(module)


# Without this, a subclass defined outside transformers silently loses the language model's weights on
# reload: the checkpoint's key layout is registered per class name (docs/testing.md).
register_checkpoint_conversion_mapping(
    SkinflowQwen2_5_VL.__name__, get_checkpoint_conversion_mapping("Qwen2_5_VLForConditionalGeneration") or [], overwrite=True
)


def fd_settings(
    layers: Iterable[int] | None, targets: Iterable[str] = MLP_TARGETS, num_bases: int = 4, reduction: float = 1 / 16
) -> dict[str, Any]:
    return {
        "layers": None if layers is None else list(layers),
        "targets": list(targets),
        "num_bases": num_bases,
        "reduction": reduction,
    }


def add_fdlinear(model: Qwen2_5_VLForConditionalGeneration, settings: dict[str, Any]) -> SkinflowQwen2_5_VL:
    """Patch a loaded (pretrained) model in place and record the settings in its config, so that the
    saved checkpoint reloads as a SkinflowQwen2_5_VL with the same layers."""
    patch_vision_tower(model.model.visual, **settings)
    setattr(model.config.vision_config, FD_KEY, settings)
    model.__class__ = SkinflowQwen2_5_VL
    return model


class SkinflowProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor for images and text only: the stock one needs a video processor, and
    that needs torchvision, which cannot be installed beside the CPU torch here."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


# AutoProcessor.from_pretrained would otherwise return the tokenizer alone for our saved folders.
AutoProcessor.register(Qwen2_5_VLConfig, SkinflowProcessor, exist_ok=True)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the given text, with Qwen's special tokens and chat template.
    Deterministic for the same texts (the BPE trainer is)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def tiny_processor(tokenizer: PreTrainedTokenizerFast, image_size: int = 112) -> SkinflowProcessor:
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels)
    return SkinflowProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)


def tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    fd: dict[str, Any] | None,
    *,
    text_hidden: int = 128,
    text_layers: int = 2,
    vision_depth: int = 2,
    vision_hidden: int = 64,
) -> Qwen2_5_VLConfig:
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None}
    head_dim = 32
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=2 * text_hidden,
            num_hidden_layers=text_layers,
            num_attention_heads=text_hidden // head_dim,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]},
            **special,
        ),  # sums to head_dim / 2
        vision_config=dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=2 * vision_hidden,
            num_heads=2,
            out_hidden_size=text_hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[vision_depth - 1],
        ),
        tie_word_embeddings=True,
        **ids,
        **special,
    )
    if fd:
        setattr(config.vision_config, FD_KEY, fd)
    return config


def build_tiny(
    texts: Iterable[str], *, seed: int, fd: dict[str, Any] | None, image_size: int = 112, vocab_size: int = 2000
) -> tuple[SkinflowQwen2_5_VL, SkinflowProcessor]:
    """A randomly initialised tiny model and its processor, the same for the same texts and seed."""
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    processor = tiny_processor(tokenizer, image_size)
    torch.manual_seed(seed)
    model = SkinflowQwen2_5_VL(tiny_config(tokenizer, fd))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model, processor


def load(
    path: str | Path, *, dtype: torch.dtype = torch.float32, fd: dict[str, Any] | None = None, **kwargs
) -> tuple[SkinflowQwen2_5_VL, Any]:
    """A checkpoint folder or hub id: our own (FDLinear layers restored from its config) or a plain
    Qwen2.5-VL (patched with `fd` if given; the spectrum starts from the pretrained weights)."""
    path = str(path)
    config = Qwen2_5_VLConfig.from_pretrained(path)
    if getattr(config.vision_config, FD_KEY, None):
        model = SkinflowQwen2_5_VL.from_pretrained(path, dtype=dtype, **kwargs)
    else:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype, **kwargs)
        if fd:
            add_fdlinear(model, fd)
        else:
            model.__class__ = SkinflowQwen2_5_VL
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def lora_config(model: nn.Module, *, r: int, alpha: int, dropout: float):
    """peft LoRA on the language model's projections (config.LORA_TARGETS), every FDLinear trained whole
    (modules_to_save, by full module name: peft matches by suffix, and a bare `gate_proj` would also train the
    language model's MLPs whole)."""
    from peft import LoraConfig

    fd_names = [name for name, module in model.named_modules() if isinstance(module, FDLinear)]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, modules_to_save=fd_names or None)


# what stays out of 4-bit quantisation: FDLinear is built from the vision weights (packed 4-bit weights have no
# spectrum to take), and the output head is small and sensitive
FOUR_BIT_SKIP = ("visual", "lm_head")


def four_bit_config():
    """bitsandbytes NF4 for the language model (QLoRA's recipe: double quantisation, bf16 compute)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=list(FOUR_BIT_SKIP),
    )


def merge_adapter(base: str | Path, adapter: str | Path, *, dtype: torch.dtype = torch.bfloat16) -> SkinflowQwen2_5_VL:
    """A saved adapter (LoRA + the FDLinear layers it trained whole) merged into a freshly loaded full-precision
    copy of its base: how a 4-bit (QLoRA) stage becomes an ordinary model, without merging into packed weights."""
    from peft import PeftModel

    model, _ = load(base, dtype=dtype)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
