import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from hidiffusion import Settings, apply, detect, resolve
from testbed.unets import example_inputs


@pytest.fixture
def skip_pairs(unet, monkeypatch):
    """Record (h, skip) shapes at every UNet concatenation, where the webui's th.cat would silently resize."""
    pairs = []
    module = sys.modules[type(unet).__module__]

    def cat(tensors, dim=0):
        if dim == 1 and len(tensors) == 2:
            pairs.append((tuple(tensors[0].shape[2:]), tuple(tensors[1].shape[2:])))
        return torch.cat(tensors, dim)

    monkeypatch.setattr(module, "th", types.SimpleNamespace(**{**vars(torch), "cat": cat}))
    return pairs


@pytest.fixture
def block_sizes(unet):
    """Spatial size of every input/output block's output (after any hook) during the next forward,
    read as the input of the module that consumes it."""
    sizes = {}
    consumers = [(("in", i), block) for i, block in enumerate(list(unet.input_blocks)[1:])]
    consumers += [(("in", len(unet.input_blocks) - 1), unet.middle_block)]
    consumers += [(("out", i), block) for i, block in enumerate(list(unet.output_blocks)[1:])]
    consumers += [(("out", len(unet.output_blocks) - 1), unet.out)]
    hooks = [module.register_forward_pre_hook(lambda m, args, key=key: sizes.__setitem__(key, tuple(args[0].shape[2:])))
             for key, module in consumers]
    yield sizes
    for hook in hooks:
        hook.remove()


def ceil_div(size, factor):
    return tuple(math.ceil(s / factor) for s in size)


def run_phase(unet, inputs, plan, step, total):
    patch = apply(unet, plan)
    try:
        phase = patch.set_step(step, total)
        with torch.no_grad():
            out = unet(**inputs)
    finally:
        patch.remove()
    return phase, out


# (step, total) picks the phase: with T1 0.6 / T2 0.3 over 10 steps, step 0 runs RAD and CA on SD1.x
# (SDXL aggressive: RAD only), step 4 RAD only (SDXL: CA only), step 8 neither.
PHASE_STEPS = (0, 4, 8)
SETTINGS = Settings(window_attention=False, t1=0.6, t2=0.3)


@pytest.mark.parametrize("latent", [(64, 64), (48, 80), (40, 24)])
@pytest.mark.parametrize("step", PHASE_STEPS)
def test_block_sizes_follow_the_method(unet, model, inputs, skip_pairs, block_sizes, latent, step):
    x = inputs(*latent, batch=1)
    plan = resolve(detect(unet), SETTINGS, latent[1] * 8, latent[0] * 8)
    phase, out = run_phase(unet, x, plan, step, 10)
    assert out.shape == x["x"].shape
    assert all(h == skip for h, skip in skip_pairs) and len(skip_pairs) == len(unet.output_blocks)
    half = ceil_div(latent, 2)
    if model == "sdxl":
        level1 = ceil_div(half, 2) if phase.ca else half
        assert block_sizes["in", 4] == level1 and block_sizes["in", 5] == level1
        assert block_sizes["in", 6] == ceil_div(level1, 4 if phase.rad else 2)
        assert block_sizes["out", 2] == level1                      # RAU: exactly the skip's size
        assert block_sizes["out", 4] == half                        # CA-up: back to the size before pooling
    else:
        level1 = ceil_div(latent, 4 if phase.rad else 2)
        assert block_sizes["in", 3] == level1
        assert block_sizes["in", 4] == (ceil_div(level1, 2) if phase.ca else level1)
        assert block_sizes["out", 7] == level1
        assert block_sizes["out", 8] == latent
    assert phase == plan.phase(step, 10)


def test_rad_is_the_same_conv_with_stride_4_padding_2_dilation_2(tiny_unets):
    unet = tiny_unets["sd15"]
    downsample = unet.input_blocks[3][0]
    seen = {}
    hook = downsample.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    try:
        plan = resolve(detect(unet), SETTINGS, 512, 512)
        patch = apply(unet, plan)
        patch.set_step(0, 10)
        assert (downsample.op.stride, downsample.op.padding, downsample.op.dilation) == ((4, 4), (2, 2), (2, 2))
        with torch.no_grad():
            unet(**example_inputs(unet, "sd15", 1, 64, 64))
        patch.set_step(9, 10)
        assert (downsample.op.stride, downsample.op.padding, downsample.op.dilation) == ((2, 2), (1, 1), (1, 1))
        patch.remove()
    finally:
        hook.remove()
    expected = F.conv2d(seen["x"], downsample.op.weight, downsample.op.bias, stride=4, padding=2, dilation=2)
    torch.testing.assert_close(seen["out"], expected, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["nearest", "bicubic"])
def test_rau_resizes_to_the_skip_then_runs_the_blocks_own_conv(tiny_unets, mode):
    unet = tiny_unets["sd15"]
    upsample = unet.output_blocks[8][2]
    seen = {}
    hook = upsample.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    try:
        plan = resolve(detect(unet), Settings(window_attention=False, rau_upsample=mode), 400, 304)
        run_phase(unet, example_inputs(unet, "sd15", 1, 38, 50), plan, 0, 10)
    finally:
        hook.remove()
    assert tuple(seen["x"].shape[2:]) == (10, 13)                   # ceil(38/4), ceil(50/4)
    expected = upsample.conv(F.interpolate(seen["x"], size=(38, 50), mode=mode))
    torch.testing.assert_close(seen["out"], expected, rtol=0, atol=0)


def test_every_phase_changes_the_output(unet, inputs):
    x = inputs(48, 64, batch=1)
    plan = resolve(detect(unet), SETTINGS, 512, 384)
    with torch.no_grad():
        vanilla = unet(**x)
    outputs = [run_phase(unet, x, plan, step, 10)[1] for step in PHASE_STEPS]
    assert (outputs[0] - vanilla).abs().max() > 1e-2
    assert (outputs[1] - vanilla).abs().max() > 1e-2
    assert (outputs[0] - outputs[1]).abs().max() > 1e-2
    torch.testing.assert_close(outputs[2], vanilla, rtol=0, atol=0)  # vanilla phase at a multiple of 64 px


def test_every_phase_runs_where_blocks_are_never_called(unet, inputs, monkeypatch):
    """ComfyUI-style UNets (Forge Classic, reForge) run each block's layers without calling the block module,
    so a hook on a block would never fire there: every phase gives the output it gives when blocks are called."""
    x = inputs(48, 64, batch=1)
    plan = resolve(detect(unet), SETTINGS, 512, 384)
    called = [run_phase(unet, x, plan, step, 10)[1] for step in PHASE_STEPS]
    block_calls = []
    hook = unet.input_blocks[plan.ca_input_block].register_forward_hook(lambda *args: block_calls.append(1))
    monkeypatch.setattr(type(unet.input_blocks[0]), "__call__", lambda block, *a, **k: block.forward(*a, **k))
    try:
        not_called = [run_phase(unet, x, plan, step, 10)[1] for step in PHASE_STEPS]
    finally:
        hook.remove()
    assert block_calls == []        # the blocks really were bypassed
    assert all(torch.equal(a, b) for a, b in zip(not_called, called))


# Every residue of the latent size modulo 8 on each axis (every multiple of 8 px), in every phase.
SWEEP = [(h, w) for h in range(24, 32) for w in (41, 46)] + [(h, h + 13) for h in range(32, 40)] + [(8, 8), (9, 15)]


@pytest.mark.parametrize("latent", SWEEP, ids=lambda s: f"{s[0]}x{s[1]}")
def test_any_size_gives_exact_skips_in_every_phase(unet, inputs, skip_pairs, latent):
    x = inputs(*latent, batch=1)
    plan = resolve(detect(unet), Settings(t1=0.6, t2=0.3), latent[1] * 8, latent[0] * 8)
    patch = apply(unet, plan)
    try:
        with torch.no_grad():
            for step in PHASE_STEPS:
                skip_pairs.clear()
                patch.set_step(step, 10)
                assert unet(**x).shape == x["x"].shape
                assert [h for h, _ in skip_pairs] == [skip for _, skip in skip_pairs]
    finally:
        patch.remove()


@pytest.mark.parametrize("latent", [(64, 64), (38, 50), (9, 15)])
def test_skip_sizes_are_the_sizes_the_unet_produces(unet, inputs, block_sizes, latent):
    """What a ControlNet-style residual must be resized to, known before the UNet runs."""
    x = inputs(*latent, batch=1)
    plan = resolve(detect(unet), SETTINGS, latent[1] * 8, latent[0] * 8)
    patch = apply(unet, plan)
    try:
        for step in PHASE_STEPS:
            patch.set_step(step, 10)
            predicted = patch.raunet.skip_sizes(*latent)
            with torch.no_grad():
                unet(**x)
            produced = [block_sizes["in", i] for i in range(len(unet.input_blocks))]
            assert predicted == produced + [produced[-1]]
    finally:
        patch.remove()


class Residuals(torch.nn.Module):
    """A ControlNet stand-in: one full-size residual per skip plus the middle, from the latent alone."""

    def __init__(self, vanilla_sizes, channels):
        super().__init__()
        self.shapes = list(zip(vanilla_sizes, channels))

    def forward(self, x, hint=None):
        return [torch.ones(x.shape[0], c, *size) for size, c in self.shapes]


def test_residuals_follow_the_phase_and_land_on_features_of_their_own_size(tiny_unets):
    unet = tiny_unets["sd15"]
    latent = (38, 50)
    plan = resolve(detect(unet), SETTINGS, 400, 304)
    patch = apply(unet, plan)
    try:
        vanilla = patch.raunet.skip_sizes(*latent)
        channels = [32] * 4 + [64] * 3 + [128] * 6
        control = Residuals(vanilla, channels)
        patch.raunet.follow_residuals(control)
        x = torch.zeros(2, 4, *latent)
        for step in PHASE_STEPS:
            patch.set_step(step, 10)
            residuals = control(x=x)
            assert [tuple(r.shape[-2:]) for r in residuals] == patch.raunet.skip_sizes(*latent)
            assert all(torch.equal(r, torch.ones_like(r)) for r in residuals)    # averaged ones stay ones
        assert step == 8 and [tuple(r.shape[-2:]) for r in residuals] == vanilla
    finally:
        patch.remove()
    assert not control._forward_hooks


def test_a_rad_twin_follows_the_rad_conv_and_is_restored(tiny_unets):
    """A LoRA's down projection beside the RAD conv (the Lora extension's functional mode) keeps its size."""
    unet = tiny_unets["sd15"]
    op = unet.input_blocks[3][0].op
    twin = torch.nn.Conv2d(op.in_channels, 4, 3, stride=2, padding=1, bias=False)
    patch = apply(unet, resolve(detect(unet), SETTINGS, 512, 512))
    try:
        patch.set_step(0, 10)                                            # RAD on before the twin arrives
        patch.raunet.add_rad_twin(twin)
        x = torch.randn(1, op.in_channels, 37, 45)
        assert op(x).shape[-2:] == twin(x).shape[-2:] == (10, 12)
        patch.set_step(9, 10)
        assert op(x).shape[-2:] == twin(x).shape[-2:] == (19, 23)
        patch.set_step(0, 10)
    finally:
        patch.remove()
    assert (twin.stride, twin.padding, twin.dilation) == ((2, 2), (1, 1), (1, 1))


def test_features_for_chosen_blocks_follow_their_sizes(tiny_unets):
    """A T2I-Adapter's features are added after a few input blocks only (sd-webui-controlnet: 2, 5, 8, 11)."""
    unet = tiny_unets["sd15"]
    latent, blocks = (38, 50), (2, 5, 8, 11)
    patch = apply(unet, resolve(detect(unet), SETTINGS, 400, 304))
    try:
        vanilla = patch.raunet.skip_sizes(*latent)
        adapter = Residuals([vanilla[b] for b in blocks], [32, 64, 128, 128])
        patch.raunet.follow_residuals(adapter, blocks)
        patch.set_step(0, 10)
        sizes = patch.raunet.skip_sizes(*latent)
        assert [tuple(f.shape[-2:]) for f in adapter(x=torch.zeros(1, 4, *latent))] == [sizes[b] for b in blocks]
        assert sizes[5] != vanilla[5]
    finally:
        patch.remove()
