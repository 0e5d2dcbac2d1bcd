"""Fidelity: our ldm/sgm HiDiffusion against the official diffusers implementation, step by step.

Each tiny UNet is converted to a diffusers twin with the same weights (testbed.official). Both
sides are patched, their step counters aligned (one UNet call per step) and the official MSW-MSA
shift pinned to ours; every step's output must agree to 1e-4 (fp32). Run with `-s` for the table.
"""
import contextlib

import pytest
import torch

from hidiffusion import Settings, apply, detect, resolve
from testbed import official
from testbed.unets import example_inputs, unet_config

ATOL = 1e-4
ROW = {"sd15": "sd15_1024", "sd21": "sd15_1024", "sdxl": "sdxl_2048"}   # official rows below 2048/4096 px
R, C, RC, V = (True, False), (False, True), (True, True), (False, False)  # phases: (RAD/RAU, CA-down/up)

# (family, case, latent (h, w), Settings overrides, steps, the phases the steps must cover).
# Overridden T1/T2/aggressive are set in the official table too; without overrides the official
# code picks its own row, so its table and ours are compared as well. Sizes keep every MSW-MSA
# window >= 4 tokens and even (documented deviations otherwise).
CASES = [
    ("sd15", "vanilla", (32, 48), dict(raunet=False, window_attention=False), 1, {V}),
    ("sd15", "both, official row", (32, 32), {}, 6, {R, V}),
    ("sd15", "both, T1 .7 T2 .3", (32, 48), dict(t1=0.7, t2=0.3), 6, {RC, R, V}),
    ("sd15", "RAU-Net only, T1 .7 T2 .3", (40, 56), dict(window_attention=False, t1=0.7, t2=0.3), 6, {RC, R, V}),
    ("sd15", "MSW-MSA only", (48, 32), dict(raunet=False), 4, {V}),
    ("sd21", "vanilla", (32, 48), dict(raunet=False, window_attention=False), 1, {V}),
    ("sd21", "both, T1 .7 T2 .3", (32, 32), dict(t1=0.7, t2=0.3), 6, {RC, R, V}),
    ("sd21", "RAU-Net only, official row", (40, 56), dict(window_attention=False), 6, {R, V}),
    ("sdxl", "vanilla", (32, 48), dict(raunet=False, window_attention=False), 1, {V}),
    ("sdxl", "both, official row (aggressive)", (32, 32), {}, 7, {R, C, V}),
    ("sdxl", "both, official row (aggressive)", (48, 32), {}, 7, {R, C, V}),
    ("sdxl", "both, T1 .7 T2 .3 non-aggressive", (32, 48), dict(t1=0.7, t2=0.3, aggressive=False), 6, {RC, C, V}),
    ("sdxl", "RAU-Net only, T1 .7 T2 .3 non-aggressive", (40, 56),
     dict(window_attention=False, t1=0.7, t2=0.3, aggressive=False), 6, {RC, C, V}),
    ("sdxl", "RAU-Net only, official row (aggressive)", (40, 56), dict(window_attention=False), 7, {R, C, V}),
    ("sdxl", "MSW-MSA only", (32, 48), dict(raunet=False), 4, {V}),
]


@pytest.fixture(scope="module")
def twins(tiny_unets):
    return {model: official.to_diffusers(unet, unet_config(model, tiny=True)) for model, unet in tiny_unets.items()}


def test_official_module_is_not_ours():
    import hidiffusion
    module = official.load()
    assert module.__name__ == "official_hidiffusion.hidiffusion"
    assert hasattr(module, "apply_hidiffusion") and hasattr(module, "switching_threshold_ratio_dict")
    assert not module.__file__.startswith(str(hidiffusion.__path__[0]))


def _official_table(model, settings):
    if settings.t1 is None and settings.aggressive is None:
        return contextlib.nullcontext()
    row = official.load().switching_threshold_ratio_dict[ROW[model]]
    aggressive = True if settings.aggressive is None else settings.aggressive
    return official.thresholds(ROW[model], settings.t1 if settings.t1 is not None else row["T1_ratio"],
                               settings.t2 if settings.t2 is not None else row["T2_ratio"], aggressive)


@pytest.mark.parametrize("model, case, size, overrides, steps, phases", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2][0]}x{c[2][1]}" for c in CASES])
@torch.no_grad()
def test_matches_official(tiny_unets, twins, model, case, size, overrides, steps, phases):
    unet, twin = tiny_unets[model], twins[model]
    height, width = size
    inputs = example_inputs(unet, model, 2, height, width)
    vanilla = unet(**inputs)
    settings = Settings(**overrides)
    if not (settings.raunet or settings.window_attention):
        difference = (vanilla - official.run(twin, inputs)).abs().max().item()
        print(f"\n{model:5} {case:42} {height}x{width} converted twin: {difference:.1e}")
        assert difference <= ATOL
        return

    patch = apply(unet, resolve(detect(unet), settings, width * 8, height * 8), seed=0)
    official.apply(twin, model, raunet=settings.raunet, window_attention=settings.window_attention)
    worst, seen, outputs = {}, set(), []
    try:
        with _official_table(model, settings):
            for step in range(steps):
                shift = step % 4
                phase = patch.set_step(step, steps, shift=shift)
                official.set_step(twin, step, steps)
                with official.pinned_shift(shift):
                    expected = official.run(twin, inputs)
                ours = unet(**inputs)
                outputs.append(ours)
                key = (phase.rad, phase.ca)
                seen.add(key)
                difference = (ours - expected).abs().max().item()
                worst[key] = max(worst.get(key, 0.0), difference)
                assert difference <= ATOL, f"step {step} phase {key} shift {shift}: max |diff| {difference}"
                if key != V or settings.window_attention:     # the patch must really be doing something
                    assert (ours - vanilla).abs().max().item() > 1e-2, f"step {step}: patched output is vanilla"
    finally:
        patch.remove()
        official.remove(twin)
    names = {R: "RAD", C: "CA", RC: "RAD+CA", V: "none"}
    print(f"\n{model:5} {case:42} {height}x{width} " +
          ", ".join(f"{names[k]} {v:.1e}" for k, v in sorted(worst.items(), reverse=True)))
    assert seen == phases
    if not settings.raunet:     # same inputs every step: each pinned shift must change the output
        assert all((a - b).abs().max() > 1e-3 for i, a in enumerate(outputs) for b in outputs[:i])


def test_twin_holds_the_ldm_tensors(tiny_unets, twins, model):
    """No copy: the benchmark's official and engine variants read the same memory, and SDXL fits once."""
    assert {p.data_ptr() for p in twins[model].parameters()} == {p.data_ptr() for p in tiny_unets[model].parameters()}
