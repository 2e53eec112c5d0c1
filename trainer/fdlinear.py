"""FDLinear: a frequency-dynamic drop-in for nn.Linear (docs/fdlinear.md), and the patcher that puts it
into a Qwen2.5-VL vision tower.

The weight W (out x in) is kept only as its learnable half-spectrum S = rfft2(W), stored as real + imag
in fp32 and scaled by 1 / (min(in, out) // 2) so an optimiser step on it moves W about as much as a step
on W would. The spectrum is cut into K rings of radial frequency (near-equal sizes, equal radii in one
ring, so conjugate pairs stay together); basis B_k = irfft2(S * ring_k). The bases are orthogonal and
sum to W. Per image, three gates computed from that image's mean token x_bar,

    z = relu(rmsnorm(x_bar @ A)),  c = 2 sigmoid(z Hc) (in),  f = 2 sigmoid(z Hf) (out),  a = 2 sigmoid(z Ha) (K),

give y = f * ((sum_k a_k B_k) @ (c * x)) + bias. The heads start at zero, so every gate is 1 and the layer
starts as exactly the linear it was made from.

Collapse first, multiply second: the per-image weight sum_k a_k B_k is built once per image (B*K*out*in
MACs) and applied with one matmul per image; tokens are never expanded to (tokens, K, out). Each of the
gates c and f is folded into that weight or applied to the activations, whichever is smaller (tokens x in
or tokens x out against out x in). With at least K images the K bases are built once per call; with fewer, one irfft2 of the
ring-scaled spectrum per image. Without gradients (inference) the bases are cached until the spectrum
changes.

Cost model, for a 1280 -> 3420 layer at N = 1296 tokens per image: the matmul is 2*N*in*out = 11.4 GFLOP
per image; building the per-image weight adds K*out*in = 17.5 MMAC (~0.3%) from cached or shared bases, or
one irfft2 of the weight (~5*out*in*log2(out*in) = 0.48 GFLOP, ~4%) per image; gates and pooling
(N*in + in*r + r*(in+out+K)) are < 0.2%. On a CPU an irfft2 is memory-bound and costs far more than its
FLOPs say, which is why the bases are cached for inference (benchmarks/fdlinear.py measures it).
Extra parameters: S has out*(in//2+1)*2 ~ out*in values, the same as W; the bottleneck A (in*r) and
the heads (r*(in+out+K) + in+out+K) are the overhead: at reduction 1/16, ~11% of a 1280 -> 3420 layer and
~40% of a 3420 -> 1280 layer (r = in/16 is 4x larger there), about +87M over the 96 MLP linears of the
Qwen2.5-VL-7B vision tower, ~1% of the 8.3B model.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def ring_ids(out_features: int, in_features: int, num_bases: int) -> torch.Tensor:
    """Ring index (0 = lowest frequency) of every coefficient of the (out, in//2+1) half-spectrum."""
    rows = torch.fft.fftfreq(out_features, dtype=torch.float64)
    cols = torch.fft.rfftfreq(in_features, dtype=torch.float64)
    radius = (rows[:, None] ** 2 + cols[None, :] ** 2).sqrt().flatten()
    # round so that equal radii computed along different paths compare equal
    unique, inverse, counts = torch.unique(torch.round(radius * 1e9), return_inverse=True, return_counts=True)
    start = torch.cumsum(counts, 0) - counts  # position of each radius' first coefficient in the sorted list
    ring_of_radius = torch.clamp((start * num_bases) // radius.numel(), max=num_bases - 1)
    return ring_of_radius[inverse].reshape(out_features, in_features // 2 + 1)


_WORKSPACES = threading.local()


def _workspace(numel: int, device: torch.device) -> torch.Tensor:
    """A flat fp32 buffer of at least `numel` values, one per thread and device, grown as needed. FDLinear layers
    run one after another, so they share it; each uses it only within its own forward call."""
    buffers = getattr(_WORKSPACES, "buffers", None)
    if buffers is None:
        buffers = _WORKSPACES.buffers = {}
    buffer = buffers.get(device)
    if buffer is None or buffer.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: usable both inside and outside inference mode
            buffer = buffers[device] = torch.empty(numel, dtype=torch.float32, device=device)
    return buffer[:numel]


class FDLinear(nn.Module):
    """Frequency-dynamic linear layer. Input: (tokens, in) with optional per-image `boundaries`
    (cumulative token counts, B+1 values), or (batch, tokens, in) with an optional (batch, tokens) mask."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        num_bases: int = 4,
        reduction: float = 1 / 16,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_bases < 1:
            raise ValueError("num_bases must be at least 1")
        self.in_features, self.out_features, self.num_bases, self.reduction = in_features, out_features, num_bases, reduction
        self.spectrum_scale = 1.0 / max(1, min(in_features, out_features) // 2)
        self.spectrum = nn.Parameter(torch.zeros(out_features, in_features // 2 + 1, 2, device=device, dtype=torch.float32))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        hidden = max(int(in_features * reduction), 16)
        self.squeeze = nn.Linear(in_features, hidden, bias=False, device=device, dtype=dtype)
        self.norm = nn.RMSNorm(hidden, eps=1e-6, device=device, dtype=dtype)
        self.in_gate = nn.Linear(hidden, in_features, device=device, dtype=dtype)
        self.out_gate = nn.Linear(hidden, out_features, device=device, dtype=dtype)
        self.basis_gate = nn.Linear(hidden, num_bases, device=device, dtype=dtype)
        self.reset_gates()
        self.boundaries_source = None  # set by patch_vision_tower: where per-image boundaries come from
        self._rings: torch.Tensor | None = None
        self._cached_bases: tuple[tuple, torch.Tensor] | None = None

    def reset_gates(self) -> None:
        """Zero heads (every gate exactly 1) and a standard init for the bottleneck."""
        for head in (self.in_gate, self.out_gate, self.basis_gate):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        nn.init.kaiming_uniform_(self.squeeze.weight, a=math.sqrt(5))
        nn.init.ones_(self.norm.weight)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, num_bases: int = 4, reduction: float = 1 / 16) -> FDLinear:
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            num_bases=num_bases,
            reduction=reduction,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        layer.set_weight(linear.weight)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        return layer

    # -- the static weight and its bases ----------------------------------------------------------
    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        spectrum = torch.fft.rfft2(weight.detach().float())
        self.spectrum.copy_(torch.view_as_real(spectrum) * self.spectrum_scale)

    def _complex_spectrum(self) -> torch.Tensor:
        return torch.view_as_complex(self.spectrum.float() / self.spectrum_scale)

    def _ring_masks(self) -> torch.Tensor:
        """(K, out, in//2+1) 0/1 masks, built lazily (never saved: they follow from the shape)."""
        if self._rings is None or self._rings.device != self.spectrum.device:
            with torch.inference_mode(False):  # built once, maybe first in inference mode, then used in training
                ids = ring_ids(self.out_features, self.in_features, self.num_bases).to(self.spectrum.device)
                self._rings = (ids[None] == torch.arange(self.num_bases, device=ids.device)[:, None, None]).float()
        return self._rings

    def _irfft2(self, spectrum: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(spectrum, s=(self.out_features, self.in_features))

    def bases(self) -> torch.Tensor:
        """(K, out, in): orthogonal, summing to the weight. Cached while no gradient is needed."""
        needs_grad = torch.is_grad_enabled() and self.spectrum.requires_grad
        key = (self.spectrum._version, self.spectrum.data_ptr(), self.spectrum.device)
        if not needs_grad and self._cached_bases is not None and self._cached_bases[0] == key:
            return self._cached_bases[1]
        bases = self._irfft2(self._complex_spectrum()[None] * self._ring_masks())
        self._cached_bases = None if needs_grad else (key, bases)
        return bases

    @property
    def weight(self) -> torch.Tensor:
        """The static weight W = sum of the bases (what every gate at 1 gives)."""
        return self._irfft2(self._complex_spectrum())

    # -- forward ------------------------------------------------------------------------------------
    def gates(self, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = F.relu(self.norm(self.squeeze(means)))
        return 2 * torch.sigmoid(self.in_gate(z)), 2 * torch.sigmoid(self.out_gate(z)), 2 * torch.sigmoid(self.basis_gate(z))

    def image_weights(self, c: torch.Tensor | None, f: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor:
        """(B, out, in) per-image weights (sum_k a_k B_k), times f (rows) and c (columns) when given, in fp32.
        Without gradients the result lives in a per-thread workspace that the next call overwrites: use it at once."""
        inference = not (torch.is_grad_enabled() and self.spectrum.requires_grad)  # bases() caches then
        if inference or a.shape[0] >= self.num_bases:  # one (B, K) x (K, out*in) product over shared bases
            flat = self.bases().reshape(self.num_bases, -1)
            if inference:
                # A fresh buffer of B x out x in floats costs more in page faults than the product itself
                # (measured 8.8 ms against 2.8 ms for one 1280 x 3420 image): reuse one per thread.
                out = _workspace(a.shape[0] * flat.shape[1], flat.device).view(a.shape[0], -1)
                combined = torch.mm(a.float(), flat, out=out)
            else:
                combined = a.float() @ flat
            combined = combined.view(-1, self.out_features, self.in_features)
        else:  # fewer images than bases: one irfft2 of the ring-scaled spectrum per image
            gain = torch.einsum("bk,kof->bof", a.float(), self._ring_masks())
            combined = self._irfft2(self._complex_spectrum()[None] * gain)
        if f is not None and c is not None:
            scale = f.float()[:, :, None] * c.float()[:, None, :]
        elif f is not None:
            scale = f.float()[:, :, None]
        elif c is not None:
            scale = c.float()[:, None, :]
        else:
            return combined
        # in place without gradients; with them, out of place: in place on a view would make autograd copy the
        # whole per-image weight in the backward pass
        return combined.mul_(scale) if inference else combined * scale

    def forward(self, x: torch.Tensor, boundaries: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 3:  # padded: (batch, tokens, in)
            if mask is None:
                means = x.mean(dim=1)
            else:
                weights = mask.to(x.dtype)[..., None]
                means = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
            tokens = x.shape[1]
        else:  # packed: (tokens, in), images back to back
            if boundaries is None and self.boundaries_source is not None:
                boundaries = self.boundaries_source.boundaries
            if boundaries is None or boundaries[-1] != x.shape[0]:
                boundaries = torch.tensor([0, x.shape[0]], device=x.device)  # one image
            lengths = (boundaries[1:] - boundaries[:-1]).to(x.device)
            segment = torch.repeat_interleave(torch.arange(lengths.numel(), device=x.device), lengths)
            sums = torch.zeros(lengths.numel(), x.shape[-1], device=x.device, dtype=x.dtype).index_add(0, segment, x)
            means = sums / lengths.clamp(min=1)[:, None].to(x.dtype)
            tokens = x.shape[0] / max(lengths.numel(), 1)
        c, f, a = self.gates(means)
        # Apply each gate where it costs least: folded into the (out x in) weight, or on the activations
        # (c on the tokens x in input, f on the tokens x out output).
        c_on_input, f_on_output = tokens < self.out_features, tokens < self.in_features
        weights = self.image_weights(None if c_on_input else c, None if f_on_output else f, a).to(x.dtype)
        c, f = c.to(x.dtype), f.to(x.dtype)
        if x.dim() == 3:
            inputs = x * c[:, None, :] if c_on_input else x
            # one image: a plain matrix product (BLAS is faster here than a batch of one)
            out = (inputs[0] @ weights[0].T)[None] if x.shape[0] == 1 else torch.bmm(inputs, weights.transpose(1, 2))
            gate = f[:, None, :] if f_on_output else None
        else:
            pieces = []
            for i, (s, e) in enumerate(zip(boundaries[:-1].tolist(), boundaries[1:].tolist(), strict=True)):
                pieces.append((x[s:e] * c[i] if c_on_input else x[s:e]) @ weights[i].T)
            out = torch.cat(pieces)
            gate = torch.repeat_interleave(f, lengths, dim=0) if f_on_output else None
        if gate is not None:  # gate and bias in one pass
            return out * gate if self.bias is None else torch.addcmul(self.bias, out, gate)
        return out if self.bias is None else out.add_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"num_bases={self.num_bases}, reduction={self.reduction}"
        )


# -- Qwen2.5-VL vision tower -------------------------------------------------------------------------
class ImageBoundaries:
    """Per-image token boundaries of the current vision forward, shared by a tower's FDLinear layers.
    Qwen2.5-VL packs all images in one sequence and attends within windows in most blocks: the gates
    need the image boundaries (cumulative t*h*w per image), not the window ones."""

    def __init__(self) -> None:
        self.boundaries: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> ImageBoundaries:
        # Shared, never copied. peft's ModulesToSaveWrapper deep-copies a single FDLinear to train it: a copied
        # source would never be updated by the tower's hook, and the copy would gate a whole batch as one image.
        # A deep copy of a whole model shares it too, which is right as long as two towers do not interleave one
        # forward pass (each tower's hook sets the boundaries just before its own layers run).
        return self

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if grid_thw is not None:
            counts = grid_thw.prod(-1)
            self.boundaries = torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def patch_vision_tower(
    visual: nn.Module,
    *,
    layers: Iterable[int] | None = None,
    targets: Iterable[str] = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    num_bases: int = 4,
    reduction: float = 1 / 16,
) -> list[str]:
    """Swap the chosen linears of a Qwen2.5-VL vision tower (`visual.blocks[i]`) for FDLinear copies of
    themselves, and feed them per-image boundaries. layers=None: every block. Returns the patched names."""
    blocks = visual.blocks
    chosen = range(len(blocks)) if layers is None else [i if i >= 0 else len(blocks) + i for i in layers]
    source = getattr(visual, "_skinflow_boundaries", None)
    if source is None:
        source = ImageBoundaries()
        visual._skinflow_boundaries = source
        visual.register_forward_pre_hook(source, with_kwargs=True)
    patched = []
    for index in chosen:
        if not 0 <= index < len(blocks):
            raise ValueError(f"vision block {index} does not exist (the tower has {len(blocks)})")
        for target in targets:
            parent_name, _, leaf = target.rpartition(".")
            parent = blocks[index].get_submodule(parent_name) if parent_name else blocks[index]
            linear = getattr(parent, leaf, None)
            if isinstance(linear, FDLinear):
                continue
            if not isinstance(linear, nn.Linear):
                raise ValueError(f"blocks.{index}.{target} is not a linear layer")
            layer = FDLinear.from_linear(linear, num_bases=num_bases, reduction=reduction)
            layer.boundaries_source = source
            setattr(parent, leaf, layer)
            patched.append(f"blocks.{index}.{target}")
    return patched
