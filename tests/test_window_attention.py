import pytest
import torch
from einops import rearrange

from hidiffusion import Settings, apply, detect, resolve
from testbed.unets import example_inputs

WINDOWS_ONLY = Settings(raunet=False)


def windowed_reference(attn, x, h, w, shift):
    """MSW-MSA by hand, from the definition: roll the h x w grid up and left by `shift` quarters of a
    window (h // 2 x w // 2), cut it at h // 2 and w // 2 and let each window attend alone."""
    rows, cols = shift * (h // 2 // 4), shift * (w // 2 // 4)
    out = torch.full_like(x, float("nan"))      # a token left out would fail the comparison
    for top, bottom in ((0, h // 2), (h // 2, h)):
        for left, right in ((0, w // 2), (w // 2, w)):
            tokens = [(i + rows) % h * w + (j + cols) % w for i in range(top, bottom) for j in range(left, right)]
            out[:, tokens] = attn(x[:, tokens])
    return out


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


def run_windowed(unet, model, latent, shift):
    """One UNet call on 2 images at `latent` with every block at `shift`, then the patch is removed
    (so attn1 attends globally again): the first windowed attn1 and what it saw (`capture_attn1`)."""
    patch = apply(unet, resolve(detect(unet), WINDOWS_ONLY, latent[1] * 8, latent[0] * 8))
    attn, seen, hooks = capture_attn1(unet, model)
    try:
        patch.set_step(0, 10, shift=shift)
        with torch.no_grad():
            unet(**example_inputs(unet, model, 2, *latent))
    finally:
        patch.remove()
        for hook in hooks:
            hook.remove()
    return attn, seen


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
@pytest.mark.parametrize("latent", [(32, 48), (64, 40), (33, 40), (40, 49), (33, 41)],
                         ids=["even", "even", "odd-h", "odd-w", "odd-both"])   # odd at level 1 of SDXL too
def test_windowed_attention_matches_the_method(unet, model, shift, latent):
    attn, seen = run_windowed(unet, model, latent, shift)
    with torch.no_grad():
        expected = windowed_reference(attn, seen["x"], *seen["grid"], shift)
        global_attention = attn(seen["x"])
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)
    assert (seen["out"] - global_attention).abs().max() > 1e-2


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_even_grids_keep_the_one_gather_each_way_bit_for_bit(unet, model, shift):
    """The path of even grids before odd grids were windowed: one gather in the order of this
    rearrange, one host call on 4 windows per image, one gather back."""
    attn, seen = run_windowed(unet, model, (32, 48), shift)
    h, w = seen["grid"]
    grid = torch.arange(h * w).view(h, w).roll((-shift * (h // 8), -shift * (w // 8)), dims=(0, 1))
    order = rearrange(grid, "(nh h) (nw w) -> (nh nw h w)", nh=2, nw=2)
    x = seen["x"]
    attended = x.index_select(1, order).view(len(x) * 4, -1, x.shape[2])
    with torch.no_grad():
        expected = attn.forward(attended).reshape(len(x), -1, x.shape[2]).index_select(1, torch.argsort(order))
    assert torch.equal(seen["attended"], attended) and torch.equal(seen["out"], expected)


# Token grid of the windowed level -> (batch, tokens) of each host attention call of one windowed
# attn1, for 2 images: one call per window size.
HOST_CALLS = [
    ((32, 32), [(8, 256)]),
    ((33, 40), [(4, 320), (4, 340)]),                      # 16 or 17 rows x 20 columns
    ((40, 33), [(4, 320), (4, 340)]),
    ((33, 41), [(2, 320), (2, 336), (2, 340), (2, 357)]),  # 16|17 x 20|21
    ((33, 33), [(2, 256), (4, 272), (2, 289)]),            # 16x17 and 17x16 have one size
]


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
@pytest.mark.parametrize("grid, calls", HOST_CALLS, ids=[f"{g[0]}x{g[1]}" for g, _ in HOST_CALLS])
def test_attention_goes_through_the_hosts_forward(tiny_unets, monkeypatch, model, grid, calls):
    """The webui swaps CrossAttention.forward (sdp, xformers, ...): windows must reach whatever is installed."""
    unet = tiny_unets[model]
    attention_class = type(unet.input_blocks[4][1].transformer_blocks[0].attn1)
    installed = attention_class.forward
    seen = {}

    def host_attention(self, x, context=None, mask=None, **kwargs):
        seen.setdefault(self, []).append((x.shape[0], x.shape[1], context is None))
        return installed(self, x, context, mask, **kwargs)

    monkeypatch.setattr(attention_class, "forward", host_attention)
    level = 1 if model == "sdxl" else 0          # the windowed level: SDXL's is level 1
    latent = [side << level for side in grid]
    plan = resolve(detect(unet), WINDOWS_ONLY, latent[1] * 8, latent[0] * 8)
    transformers = [unet.input_blocks[i][1] for i in plan.window_input_blocks]
    transformers += [unet.output_blocks[i][1] for i in plan.window_output_blocks]
    windowed = [block.attn1 for transformer in transformers for block in transformer.transformer_blocks]
    patch = apply(unet, plan)
    patch.set_step(0, 10)
    with torch.no_grad():
        unet(**example_inputs(unet, model, 2, *latent))
    patch.remove()
    assert len(windowed) == (10 if model == "sdxl" else 5)
    for attn in windowed:
        assert sorted(seen.pop(attn), key=lambda call: call[1]) == [(batch, tokens, True) for batch, tokens in calls]
    assert seen and all(batch == 2 for others in seen.values() for batch, _, _ in others)


def test_context_merged_tokens_and_grids_of_side_1_stay_global(tiny_unets):
    unet = tiny_unets["sd15"]
    patch = apply(unet, resolve(detect(unet), WINDOWS_ONLY, 256, 256))
    attn, seen, hooks = capture_attn1(unet, "sd15")
    patch.set_step(0, 10)
    try:
        with torch.no_grad():
            unet(**example_inputs(unet, "sd15", 1, 32, 32))     # records the 32x32 grid
            x = seen["x"]
            assert seen["attended"].shape[0] == 4               # windowed, so the calls below can differ
            context = torch.randn(1, 7, x.shape[-1])
            torch.testing.assert_close(attn(x, context=context), attn.forward(x, context=context))  # reference-only
            merged = x[:, ::2]                                   # ToMe: fewer tokens than the grid
            torch.testing.assert_close(attn(merged), attn.forward(merged))
            seen.clear()
            unet(**example_inputs(unet, "sd15", 1, 1, 40))      # a side of 1 has no half: global attention
            assert seen["attended"].shape == seen["x"].shape and seen["grid"] == (1, 40)
    finally:
        patch.remove()
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("model, settings", [("sd15", Settings(t1=0.7, t2=0.3)), ("sdxl", Settings())])
def test_the_plan_knows_the_grid_of_every_windowed_block(tiny_unets, model, settings):
    """describe() reports `Plan.window_grids`: check it against the grids the UNet really runs at an
    odd latent (SDXL level 1: 18x25, pooled 9x13), with and without RAD and CA."""
    unet = tiny_unets[model]
    plan = resolve(detect(unet), settings, 49 * 8, 35 * 8)
    transformers = {f"in{i}": unet.input_blocks[i][1] for i in plan.window_input_blocks}
    transformers.update({f"out{i}": unet.output_blocks[i][1] for i in plan.window_output_blocks})
    grids = {}
    hooks = [transformer.register_forward_pre_hook(
        lambda module, args, name=name: grids.__setitem__(name, tuple(args[0].shape[2:])))
        for name, transformer in transformers.items()]
    patch = apply(unet, plan)
    phases = set()
    try:
        with torch.no_grad():
            for step in range(10):
                phase = patch.set_step(step, 10)
                unet(**example_inputs(unet, model, 1, 35, 49))
                assert grids == plan.window_grids(ca=phase.ca), f"step {step}, {phase}"
                phases.add((phase.rad, phase.ca))
    finally:
        patch.remove()
        for hook in hooks:
            hook.remove()
    assert {ca for _, ca in phases} == {True, False} and {rad for rad, _ in phases} == {True, False}


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
    shifts = [k for step in runs[0] for (k,) in step.values()]
    assert set(shifts) == {0, 1, 2, 3}
    assert len({tuple(step.values()) for step in runs[0]}) > 1          # blocks and steps differ


def test_one_seed_draws_the_shifts_it_drew_before_per_image_seeds(tiny_unets):
    unet = tiny_unets["sd15"]
    patch = apply(unet, resolve(detect(unet), WINDOWS_ONLY, 1024, 1024), seed=7)
    shifts = []
    for step in range(3):
        patch.set_step(step, 3)
        shifts.append(dict(patch.window_attention.shifts))
    patch.remove()
    assert shifts == [{"in1": (1,), "in2": (1,), "out9": (0,), "out10": (0,), "out11": (3,)},
                      {"in1": (2,), "in2": (2,), "out9": (0,), "out10": (3,), "out11": (1,)},
                      {"in1": (2,), "in2": (1,), "out9": (1,), "out10": (1,), "out11": (3,)}]


@pytest.mark.parametrize("layout", ["webui", "custom"])
def test_each_image_of_a_batch_is_reproducible_from_its_own_seed(tiny_unets, layout):
    """Two images with a cond and an uncond row each, at an odd grid (17x24 at level 1): the rows of
    each image equal a run of that image alone with its own seed."""
    unet = tiny_unets["sdxl"]
    seeds, step = (3, 4), 2
    plan = resolve(detect(unet), WINDOWS_ONLY, 48 * 8, 34 * 8)
    inputs = example_inputs(unet, "sdxl", 4, 34, 48)
    if layout == "webui":       # [cond 0, cond 1, uncond 0, uncond 1]: the default, row r is image r % 2
        image_rows, row_images = [[0, 2], [1, 3]], None
    else:                       # [cond 0, uncond 0, cond 1, uncond 1]
        image_rows, row_images = [[0, 1], [2, 3]], lambda rows: [row // 2 for row in range(rows)]
    patch = apply(unet, plan, seed=seeds, row_images=row_images)
    patch.set_step(step, 10)
    assert any(len(set(shifts)) > 1 for shifts in patch.window_attention.shifts.values())
    with torch.no_grad():
        batched = unet(**inputs)
        cond_only = unet(**{k: v[:2] for k, v in inputs.items()})     # uncond skipped (webui layout)
        alone = []
        for seed, rows in zip(seeds, image_rows):
            apply(unet, plan, seed=seed).set_step(step, 10)
            alone.append(unet(**{k: v[rows] for k, v in inputs.items()}))
    for rows, image in zip(image_rows, alone):
        torch.testing.assert_close(batched[rows], image, rtol=1e-4, atol=1e-4)
    if layout == "webui":
        torch.testing.assert_close(cond_only, torch.stack([image[0] for image in alone]), rtol=1e-4, atol=1e-4)


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
    assert shifts == ([{(s % 4,)} for s in range(6)] if mode == "rotate" else [{(0,)}] * 6)


def test_an_attn1_kept_global_runs_on_the_whole_grid_and_is_reported(tiny_unets):
    unet = tiny_unets["sd15"]
    attn = unet.input_blocks[1][1].transformer_blocks[0].attn1
    seen = []
    hook = attn.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    patch = apply(unet, resolve(detect(unet), Settings(raunet=False), 512, 512))
    try:
        patch.window_attention.keep_global(attn, "something inside needs the whole grid")
        patch.set_step(0, 10)
        with torch.no_grad():
            unet(**example_inputs(unet, "sd15", 2, 32, 32))
    finally:
        patch.remove()
        hook.remove()
    assert seen == [(2, 32 * 32, 32)]
    assert patch.window_attention.left_global == {"something inside needs the whole grid": {"in1": None}}
