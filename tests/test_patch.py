import pytest
import torch

import hidiffusion
from hidiffusion import Settings, apply, detect, patched, remove, remove_all, resolve
from testbed.unets import build_unet, example_inputs


def hook_count(unet):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
               + len(m._forward_pre_hooks_with_kwargs) for m in unet.modules())


def conv_geometry(unet):
    return [(m.stride, m.padding, m.dilation) for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]


def run_all_phases(unet, model, latent=(40, 56)):
    plan = resolve(detect(unet), Settings(t1=0.6, t2=0.3), latent[1] * 8, latent[0] * 8)
    patch = apply(unet, plan, seed=5)
    x = example_inputs(unet, model, 2, *latent)
    outputs = []
    with torch.no_grad():
        for step in (0, 4, 8):
            patch.set_step(step, 10)
            outputs.append(unet(**x))
    return patch, outputs


def test_names_keys_and_weights_unchanged_while_applied_and_exact_after_removal(unet, model):
    names = [name for name, _ in unet.named_modules()]
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    geometry, hooks = conv_geometry(unet), hook_count(unet)
    x = example_inputs(unet, model, 2, 48, 64)
    with torch.no_grad():
        before = unet(**x)
    patch, _ = run_all_phases(unet, model)
    patch.set_step(0, 10)                      # leave it mid-RAD: removal must restore the conv too
    assert [name for name, _ in unet.named_modules()] == names
    assert list(unet.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
    assert hook_count(unet) > hooks
    patch.remove()
    assert hook_count(unet) == hooks and conv_geometry(unet) == geometry and patched(unet) is None
    with torch.no_grad():
        after = unet(**x)
    assert torch.equal(before, after)


def test_in_place_weight_reload_while_patched_loads_every_key(tiny_unets):
    """The webui reloads same-architecture checkpoints with load_state_dict(strict=False) into the live UNet."""
    unet = tiny_unets["sd15"]
    patch, _ = run_all_phases(unet, "sd15")
    patch.set_step(0, 10)
    other = build_unet("sd15", tiny=True, seed=1).state_dict()
    original = {k: v.clone() for k, v in unet.state_dict().items()}
    try:
        result = unet.load_state_dict(other, strict=False)
        assert not result.missing_keys and not result.unexpected_keys
        assert all(torch.equal(v, other[k]) for k, v in unet.state_dict().items())
    finally:
        unet.load_state_dict(original)
        patch.remove()


def test_apply_is_idempotent_and_replaces_the_earlier_patch(tiny_unets):
    unet = tiny_unets["sdxl"]
    plan = resolve(detect(unet), Settings(), 1024, 1024)
    hooks = hook_count(unet)
    first = apply(unet, plan)
    once = hook_count(unet)
    second = apply(unet, plan)
    assert hook_count(unet) == once > hooks and patched(unet) is second
    first.remove()                              # a stale handle must not undo the live patch
    assert patched(unet) is second and hook_count(unet) == once
    assert remove(unet) and not remove(unet)
    assert hook_count(unet) == hooks


def test_remove_all_heals_every_unet_after_an_error_mid_forward(tiny_unets):
    hooks = {model: hook_count(unet) for model, unet in tiny_unets.items()}
    for model, unet in tiny_unets.items():
        patch = apply(unet, resolve(detect(unet), Settings(), 512, 512))
        patch.set_step(0, 10)
    unet = tiny_unets["sd15"]
    with pytest.raises(RuntimeError), torch.no_grad():
        unet(**example_inputs(unet, "sd15", 1, 32, 32) | {"context": torch.randn(1, 77, 3)})  # fails inside
    assert remove_all() == 3 and remove_all() == 0
    assert {model: hook_count(unet) for model, unet in tiny_unets.items()} == hooks
    assert unet.input_blocks[3][0].op.stride == (2, 2)


def test_a_guard_that_says_no_removes_the_patch_before_the_unet_runs(tiny_unets):
    """A host whose run died mid-RAU-Net: the next UNet call that is not part of that run is vanilla."""
    unet = tiny_unets["sd15"]
    x = example_inputs(unet, "sd15", 2, 32, 32)
    hooks, geometry = hook_count(unet), conv_geometry(unet)
    with torch.no_grad():
        vanilla = unet(**x)
        running = [True]
        patch = apply(unet, resolve(detect(unet), Settings(), 512, 512), guard=lambda: running[0])
        patch.set_step(0, 10)                                   # RAD and windows on
        patched_output = unet(**x)
        assert patched(unet) is patch and not torch.allclose(patched_output, vanilla, atol=1e-3)
        running[0] = False                                      # the run ended without removing its patch
        assert torch.equal(unet(**x), vanilla)
    assert patched(unet) is None and hook_count(unet) == hooks and conv_geometry(unet) == geometry


def test_half_precision_stays_half_in_every_phase(tiny_unets):
    """The webui runs GPUs under autocast (fp16/bf16); no HiDiffusion step may upcast. bf16 runs on CPU."""
    unet = tiny_unets["sd15"]
    patch = apply(unet, resolve(detect(unet), Settings(t1=0.6, t2=0.3), 448, 320))
    seen = []
    hooks = [unet.output_blocks[i].register_forward_hook(lambda m, a, out: seen.append(out.dtype)) for i in (7, 8, 9)]
    try:
        x = example_inputs(unet, "sd15", 2, 40, 56)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for step in (0, 4, 8):
                patch.set_step(step, 10)
                assert unet(**x).dtype == torch.bfloat16
    finally:
        patch.remove()
        for hook in hooks:
            hook.remove()
    assert set(seen) == {torch.bfloat16}


def test_a_dropped_model_is_not_kept_alive_by_the_registry():
    import gc
    import weakref
    unet = build_unet("sd15", tiny=True)
    apply(unet, resolve(detect(unet), Settings(), 512, 512))
    ref = weakref.ref(unet)
    del unet
    gc.collect()
    assert ref() is None and remove_all() == 0


def test_public_api_is_small_and_documented():
    assert set(hidiffusion.__all__) >= {"detect", "resolve", "apply", "remove", "remove_all", "Settings", "Plan"}
    for name in ("detect", "resolve", "apply", "remove", "remove_all"):
        assert getattr(hidiffusion, name).__doc__
    assert hidiffusion.Patch.set_step.__doc__ and hidiffusion.Patch.remove.__doc__


def test_a_plan_for_another_layout_is_refused_before_anything_is_installed(tiny_unets):
    sd15, sdxl = tiny_unets["sd15"], tiny_unets["sdxl"]
    hooks = hook_count(sdxl)
    with pytest.raises(hidiffusion.UnsupportedModel, match="resolved for SD1"):
        apply(sdxl, resolve(detect(sd15), Settings(), 1024, 1024))
    assert hook_count(sdxl) == hooks and patched(sdxl) is None
