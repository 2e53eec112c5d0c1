"""FDLinear (docs/fdlinear.md) and its place in a Qwen2.5-VL vision tower."""

import math

import pytest
import torch
from torch import nn

from trainer.fdlinear import FDLinear, patch_vision_tower, ring_ids


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def randomise_gates(layer: FDLinear, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (layer.in_gate, layer.out_gate, layer.basis_gate):
            head.weight.copy_(torch.randn(head.weight.shape, generator=g))


@pytest.mark.parametrize("shape", [(37, 53), (64, 128), (128, 64), (5, 3)])
def test_at_start_it_is_the_linear_it_came_from(shape):
    torch.manual_seed(0)
    linear = nn.Linear(*shape)
    layer = FDLinear.from_linear(linear)
    padded = torch.randn(3, 11, shape[0])
    assert relative_error(layer(padded), linear(padded)) <= 1e-5
    packed, boundaries = torch.randn(20, shape[0]), torch.tensor([0, 5, 20])
    assert relative_error(layer(packed, boundaries), linear(packed)) <= 1e-5
    with torch.no_grad():  # the cached-bases path too
        assert relative_error(layer(packed, boundaries), linear(packed)) <= 1e-5


def test_bases_are_orthogonal_and_sum_to_the_weight():
    torch.manual_seed(1)
    linear = nn.Linear(48, 80)
    bases = FDLinear.from_linear(linear, num_bases=5).bases().detach()
    assert relative_error(bases.sum(0), linear.weight.detach()) <= 1e-5
    gram = torch.einsum("koi,joi->kj", bases, bases)
    off_diagonal = gram - torch.diag(torch.diagonal(gram))
    assert off_diagonal.abs().max() <= 1e-5 * torch.diagonal(gram).min()
    assert (torch.diagonal(gram) > 0).all()  # no empty ring


def test_rings_are_near_equal_disjoint_and_keep_equal_radii_together():
    ids = ring_ids(80, 48, 4)
    counts = torch.bincount(ids.flatten(), minlength=4)
    assert counts.sum() == 80 * 25 and counts.min() >= 0.8 * counts.max()
    rows, cols = torch.fft.fftfreq(80), torch.fft.rfftfreq(48)
    radius = (rows[:, None] ** 2 + cols[None, :] ** 2).sqrt()
    # rows k and -k (conjugate partners in column 0) share a ring; rings grow with radius
    partner = [(80 - k) % 80 for k in range(80)]
    assert torch.equal(ids[:, 0], ids[partner, 0]) and torch.equal(ids[:, 24], ids[partner, 24])
    for k in range(3):
        assert radius[ids == k].max() <= radius[ids == k + 1].min() + 1e-12


def test_gradient_reaches_the_spectrum_and_all_three_heads():
    torch.manual_seed(2)
    layer = FDLinear.from_linear(nn.Linear(32, 24))
    layer(torch.randn(2, 9, 32)).pow(2).sum().backward()
    # (the bottleneck itself gets none yet: the zero heads stop it, as they should at start)
    for name in ("spectrum", "in_gate.weight", "out_gate.weight", "basis_gate.weight", "bias"):
        grad = layer.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_gradient_reaches_the_heads_with_fewer_and_more_images_than_bases():
    for images in (1, 6):
        layer = FDLinear.from_linear(nn.Linear(16, 16), num_bases=4)
        layer(torch.randn(images, 5, 16)).sum().backward()
        assert layer.basis_gate.weight.grad.abs().sum() > 0 and layer.spectrum.grad.abs().sum() > 0


def test_the_per_image_mean_ignores_other_images_tokens():
    torch.manual_seed(3)
    layer = FDLinear.from_linear(nn.Linear(16, 12))
    randomise_gates(layer)
    x = torch.randn(10, 16)
    boundaries = torch.tensor([0, 4, 10])
    before = layer(x, boundaries)
    changed = x.clone()
    changed[4:] = torch.randn(6, 16) * 5
    after = layer(changed, boundaries)
    assert torch.equal(before[:4], after[:4])
    assert not torch.allclose(before[4:], after[4:])
    # padded input: masked tokens do not count either
    padded = torch.zeros(2, 6, 16)
    padded[0, :4], padded[1] = x[:4], x[4:]
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    noisy = padded.clone()
    noisy[0, 4:] = 100.0
    assert torch.allclose(layer(noisy, mask=mask)[0, :4], before[:4], atol=1e-5)
    assert torch.allclose(layer(padded, mask=mask)[1], before[4:], atol=1e-5)


def spirals(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved one-turn spirals, with a constant third feature (the bias a bottleneck needs)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * 2 * math.pi + 0.5
    label = torch.arange(n) % 2
    angle = t + math.pi * label
    points = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], 1) / (2 * math.pi)
    return torch.cat([points, torch.ones(n, 1)], 1), label


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 400) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x[:, None, :])[:, 0], y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def test_it_fits_spirals_that_a_plain_linear_layer_of_the_same_width_cannot():
    x, y = spirals(400, seed=0)
    held_out_x, held_out_y = spirals(400, seed=1)
    torch.manual_seed(0)
    plain = nn.Linear(3, 2)
    fit(plain, x, y)
    dynamic = FDLinear(3, 2)
    with torch.no_grad():  # from a random linear, as from_linear would start
        dynamic.set_weight(torch.randn(2, 3))
        nn.init.normal_(dynamic.squeeze.weight, std=2.0)
    fit(dynamic, x, y)
    with torch.no_grad():
        plain_accuracy = (plain(held_out_x).argmax(1) == held_out_y).float().mean().item()
        dynamic_accuracy = (dynamic(held_out_x[:, None, :])[:, 0].argmax(1) == held_out_y).float().mean().item()
    assert plain_accuracy < 0.7
    assert dynamic_accuracy > 0.95


def test_the_cache_follows_parameter_updates():
    layer = FDLinear.from_linear(nn.Linear(8, 8))
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        first = layer(x)
        layer.spectrum.mul_(2.0)
        second = layer(x)
    assert torch.allclose(second - layer.bias, 2 * (first - layer.bias), atol=1e-5)


def test_patcher_swaps_chosen_vision_linears_and_feeds_image_boundaries(tiny_model):
    model, processor = tiny_model(fd=None)
    visual = model.model.visual
    names = patch_vision_tower(visual, layers=[-1], targets=("mlp.up_proj", "mlp.down_proj"))
    assert names == ["blocks.1.mlp.up_proj", "blocks.1.mlp.down_proj"]
    assert isinstance(visual.blocks[1].mlp.up_proj, FDLinear) and isinstance(visual.blocks[0].mlp.up_proj, nn.Linear)
    with pytest.raises(ValueError, match="does not exist"):
        patch_vision_tower(visual, layers=[7])
    from PIL import Image

    images = [Image.new("RGB", (112, 112), (200, 90, 80)), Image.new("RGB", (112, 112), (90, 60, 40))]
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    batch = processor(text=[text, text], images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        model(**batch)
    per_image = batch["image_grid_thw"].prod(-1)
    assert visual.blocks[1].mlp.up_proj.boundaries_source.boundaries.tolist() == [0, per_image[0].item(), per_image.sum().item()]


@pytest.mark.parametrize("fan_in, fan_out, tokens", [(6, 40, 12), (40, 6, 12), (6, 5, 12), (40, 48, 12)])
def test_forward_is_the_definition_wherever_the_gates_are_applied(fan_in, fan_out, tokens):
    """y = f * ((sum_k a_k B_k) @ (c * x)) + bias, whether a gate is folded into the weight (tokens >= the other
    dimension) or applied to the activations; padded and packed; with and without gradients."""
    torch.manual_seed(4)
    layer = FDLinear.from_linear(nn.Linear(fan_in, fan_out))
    randomise_gates(layer)
    x = torch.randn(3, tokens, fan_in)
    c, f, a = layer.gates(x.mean(1))
    bases = layer.bases().detach()
    expected = torch.stack([f[i] * ((x[i] * c[i]) @ torch.einsum("k,koi->oi", a[i], bases).T) for i in range(3)]) + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)
    packed = x.reshape(-1, fan_in)
    boundaries = torch.tensor([0, tokens, 2 * tokens, 3 * tokens])
    assert torch.allclose(layer(packed, boundaries), expected.reshape(-1, fan_out), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(layer(x[:1]), expected[:1], atol=1e-5)


def test_per_image_gating_survives_peft_wrapping_the_layers_to_train_them(tiny_model):
    """peft's modules_to_save deep-copies each FDLinear: the copy must still see the tower's per-image boundaries,
    or it gates a batch of two different images as one (the outputs would then differ from the unwrapped tower's)."""
    import copy

    from peft import LoraConfig, get_peft_model
    from PIL import Image

    from trainer.model import fd_settings

    model, processor = tiny_model(fd=fd_settings(None, ("mlp.up_proj", "mlp.down_proj"), 4, 1 / 16))
    torch.manual_seed(0)
    with torch.no_grad():  # gates away from 1, so that which tokens form "an image" changes the output
        for layer in model.modules():
            if isinstance(layer, FDLinear):
                for head in (layer.in_gate, layer.out_gate, layer.basis_gate):
                    head.weight.normal_(0, 0.5)
    images = [Image.new("RGB", (112, 112), (200, 90, 80)), Image.new("RGB", (112, 112), (30, 60, 140))]
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    batch = processor(text=[text, text], images=images, return_tensors="pt", padding=True)
    pixels, grid = batch["pixel_values"], batch["image_grid_thw"]
    fd_names = [name for name, m in model.named_modules() if isinstance(m, FDLinear)]
    wrapped = get_peft_model(
        copy.deepcopy(model),
        LoraConfig(r=4, target_modules=r"model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj", modules_to_save=fd_names),
    )
    # wrapped before any forward pass (as trl does): a copied source would hold no boundaries, never updated
    with torch.no_grad():
        plain = model.model.visual(pixels, grid_thw=grid).pooler_output
    copies = [m for name, m in wrapped.named_modules() if name.endswith("modules_to_save.default")]
    assert len(copies) == len(fd_names) and all(isinstance(m, FDLinear) for m in copies)
    with torch.no_grad():
        through_peft = wrapped.base_model.model.model.visual(pixels, grid_thw=grid).pooler_output
    assert torch.allclose(plain, through_peft, atol=1e-5)
    # and the check has teeth: one boundary for the whole batch gives other outputs
    for layer in copies:
        layer.boundaries_source = None
    with torch.no_grad():
        as_one_image = wrapped.base_model.model.model.visual(pixels, grid_thw=grid).pooler_output
    assert not torch.allclose(plain, as_one_image, atol=1e-3)


def test_layers_sharing_the_inference_workspace_do_not_disturb_each_other():
    torch.manual_seed(0)
    first, second = FDLinear(24, 40), FDLinear(40, 16)
    for layer in (first, second):
        layer.set_weight(torch.randn(layer.out_features, layer.in_features))
        with torch.no_grad():
            for head in (layer.in_gate, layer.out_gate, layer.basis_gate):
                head.weight.normal_(0, 0.5)
    x = torch.randn(3, 10, 24)
    with torch.inference_mode():  # the buffer made here is used again outside inference mode below
        expected = first(x).clone()
    with torch.no_grad():
        chained = second(first(x))  # the second layer reuses the buffer the first one just used
        again = first(x)
    assert torch.allclose(again, expected, atol=1e-6)
    with torch.enable_grad():  # the definition, with gradients (no workspace)
        assert torch.allclose(chained, second(first(x)).detach(), rtol=1e-4, atol=1e-3)
