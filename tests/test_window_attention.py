import pytest
import torch
from einops import rearrange

from hidiffusion import Settings, apply, detect, resolve
from hidiffusion.unets import example_inputs

WINDOWS_ONLY = Settings(raunet=False)


def windowed_reference(attn, x, h, w, shift):
    """MSW-MSA by hand: roll by `shift` quarter-windows, attend inside each of the 2x2 windows, roll back."""
    grid = rearrange(x, "b (h w) c -> b h w c", h=h)
    rows, cols = shift * (h // 8), shift * (w // 8)
    grid = grid.roll((-rows, -cols), dims=(1, 2))
    out = torch.zeros_like(grid)
    for top in (0, h // 2):
        for left in (0, w // 2):
            window = grid[:, top:top + h // 2, left:left + w // 2]
            tokens = attn(rearrange(window, "b h w c -> b (h w) c"))
            out[:, top:top + h // 2, left:left + w // 2] = rearrange(tokens, "b (h w) c -> b h w c", h=h // 2)
    return rearrange(out.roll((rows, cols), dims=(1, 2)), "b h w c -> b (h w) c")


def capture_attn1(unet, model):
    """The first windowed block's attn1, with the token grid, input and output of its first call.
    Register after `apply`: "x" is seen before the window split, "attended" after it, "out" after the merge."""
    transformer = unet.input_blocks[4 if model == "sdxl" else 1][1]
    attn = transformer.transformer_blocks[0].attn1
    seen = {}

    def record(key, value):
        seen.setdefault(key, value)

    hooks = [transformer.register_forward_pre_hook(lambda m, args: seen.update(grid=tuple(args[0].shape[2:]))),
             attn.register_forward_pre_hook(lambda m, args: record("x", args[0]), prepend=True),
             attn.register_forward_pre_hook(lambda m, args: record("attended", args[0])),
             attn.register_forward_hook(lambda m, args, out: record("out", out))]
    return attn, seen, hooks


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
@pytest.mark.parametrize("latent", [(32, 48), (64, 40)])
def test_windowed_attention_matches_the_method(unet, model, shift, latent):
    patch = apply(unet, resolve(detect(unet), WINDOWS_ONLY, latent[1] * 8, latent[0] * 8))
    attn, seen, hooks = capture_attn1(unet, model)
    try:
        patch.set_step(0, 10, shift=shift)
        with torch.no_grad():
            unet(**example_inputs(unet, model, 2, *latent))
            patch.remove()     # the reference calls attn1 unwindowed
            expected = windowed_reference(attn, seen["x"], *seen["grid"], shift)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen["attended"].shape[0] == 2 * 4
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)


def test_attention_goes_through_the_hosts_forward(tiny_unets, monkeypatch):
    """The webui swaps CrossAttention.forward (sdp, xformers, ...): windows must reach whatever is installed."""
    unet = tiny_unets["sd15"]
    attention_class = type(unet.input_blocks[1][1].transformer_blocks[0].attn1)
    installed = attention_class.forward
    batches = []

    def host_attention(self, x, context=None, mask=None, **kwargs):
        batches.append((x.shape[0], context is None))
        return installed(self, x, context, mask, **kwargs)

    monkeypatch.setattr(attention_class, "forward", host_attention)
    patch = apply(unet, resolve(detect(unet), WINDOWS_ONLY, 256, 256))
    patch.set_step(0, 10)
    with torch.no_grad():
        unet(**example_inputs(unet, "sd15", 2, 32, 32))
    patch.remove()
    # 5 windowed self-attentions see 2 images x 4 windows; all other attention calls see the 2 images.
    assert batches.count((8, True)) == 5
    assert all(batch == 2 for batch, _ in batches if (batch, _) != (8, True))


def test_context_merged_tokens_and_odd_grids_stay_global(tiny_unets):
    unet = tiny_unets["sd15"]
    patch = apply(unet, resolve(detect(unet), WINDOWS_ONLY, 256, 256))
    attn, seen, hooks = capture_attn1(unet, "sd15")
    patch.set_step(0, 10)
    try:
        with torch.no_grad():
            unet(**example_inputs(unet, "sd15", 1, 32, 32))     # records the 32x32 grid
            x = seen["x"]
            context = torch.randn(1, 7, x.shape[-1])
            torch.testing.assert_close(attn(x, context=context), attn.forward(x, context=context))  # reference-only
            merged = x[:, ::2]                                   # ToMe: fewer tokens than the grid
            torch.testing.assert_close(attn(merged), attn.forward(merged))
            seen.clear()
            unet(**example_inputs(unet, "sd15", 1, 33, 30))     # odd level-0 grid: global attention
            assert seen["attended"].shape == seen["x"].shape and seen["grid"] == (33, 30)
    finally:
        patch.remove()
        for hook in hooks:
            hook.remove()


def test_shifts_are_reproducible_from_seed_step_and_block(tiny_unets):
    unet = tiny_unets["sdxl"]
    plan = resolve(detect(unet), WINDOWS_ONLY, 1024, 1024)
    runs = []
    for seed in (7, 7, 8):
        patch = apply(unet, plan, seed=seed)
        shifts = []
        for step in range(20):
            patch.set_step(step, 20)
            shifts.append(dict(patch.window_attention.shifts))
        patch.remove()
        runs.append(shifts)
    assert runs[0] == runs[1] and runs[0] != runs[2]
    shifts = [k for step in runs[0] for k in step.values()]
    assert set(shifts) == {0, 1, 2, 3}
    assert len({tuple(step.values()) for step in runs[0]}) > 1          # blocks and steps differ


def test_cond_and_uncond_rows_share_a_shift_whether_batched_or_not(tiny_unets):
    unet = tiny_unets["sdxl"]
    x = example_inputs(unet, "sdxl", 2, 32, 48)
    patch = apply(unet, resolve(detect(unet), WINDOWS_ONLY, 384, 256), seed=3)
    patch.set_step(5, 10)
    with torch.no_grad():
        batched = unet(**x)
        rows = [unet(**{k: v[i:i + 1] for k, v in x.items()}) for i in range(2)]
    patch.remove()
    torch.testing.assert_close(torch.cat(rows), batched, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["rotate", "none"])
def test_deterministic_shift_modes(tiny_unets, mode):
    unet = tiny_unets["sd15"]
    patch = apply(unet, resolve(detect(unet), Settings(raunet=False, window_shift=mode), 512, 512), seed=1)
    shifts = []
    for step in range(6):
        patch.set_step(step, 6)
        shifts.append(set(patch.window_attention.shifts.values()))
    patch.remove()
    assert shifts == ([{s % 4} for s in range(6)] if mode == "rotate" else [{0}] * 6)
