"""The webui glue (scripts/hidiffusion_script.py) against the stand-in webui in tests/webui_stub.

Real engine patches on the real tiny ldm/sgm UNets; the UI is built with real gradio 3.41.2.
"""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "webui_stub"))

import gradio as gr  # noqa: E402

import hidiffusion  # noqa: E402
from hidiffusion.unets import build_unet  # noqa: E402
from modules import infotext_utils, processing, script_callbacks, scripts, sd_models, shared  # noqa: E402

NAMES = ["enable", "raunet", "window_attention", "preset", "auto_timing", "t1", "t2", "aggressive", "passes",
         "native_guard", "rau_upsample", "window_shift"]


@pytest.fixture(scope="module")
def webui():
    """Load the XYZ stand-in and our script the way the webui does; build the txt2img UI once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny UNets: one thread is as fast, and immune to a busy machine
    script_callbacks.clear_callbacks()
    scripts.scripts_data.clear()
    xyz = scripts.load_script(str(ROOT / "tests" / "webui_stub" / "scripts" / "xyz_grid.py"))
    module = scripts.load_script(str(ROOT / "scripts" / "hidiffusion_script.py"))
    runner = scripts.ScriptRunner([module.HiDiffusionScript])
    with gr.Blocks():
        inputs = runner.setup_ui()
    yield dict(module=module, xyz=xyz, runner=runner, inputs=inputs, script=runner.scripts[0])
    script_callbacks.clear_callbacks()
    scripts.scripts_data.clear()
    torch.set_num_threads(threads)


@pytest.fixture
def sd15(tiny_unets):
    unet = tiny_unets["sd15"]
    shared.sd_model = sd_models.StableDiffusionModel(unet)
    yield unet
    shared.sd_model = None
    hidiffusion.remove_all()


@pytest.fixture
def spy(webui):
    """Records, for every denoiser call after ours ran, what the UNet being sampled looks like."""
    calls = []

    def record(params):
        unet = shared.sd_model.model.diffusion_model
        patch = hidiffusion.patched(unet)
        calls.append(dict(hr=params.denoiser.p.is_hr_pass, unet=unet, patched=patch is not None,
                          stride=unet.input_blocks[3][0].op.stride, phase=patch.phase if patch else None,
                          window=bool(patch and patch.window_attention and patch.window_attention.enabled),
                          names=[n for n, _ in unet.named_modules()]))
    script_callbacks.on_cfg_denoiser(record)
    yield calls
    script_callbacks.remove_callbacks_for_function(record)


def args(enable=True, **values):
    """Positional script args: the UI defaults with changes (index 0 is the selectable-script dropdown)."""
    from_ui = dict(zip(NAMES, [False, True, True, "Auto", True, 0.4, 0.0, "Auto", "Both", True, "nearest", "random"]))
    from_ui.update(values, enable=enable)
    return [None] + [from_ui[n] for n in NAMES]


def run(webui, script_args=None, runner=None, img2img=False, **kwargs):
    kwargs.setdefault("width", 128)        # latent 16: every code path, a fraction of a second per step
    kwargs.setdefault("height", 128)
    runner = webui["runner"] if runner is None else runner
    script_args = args(enable=False) if script_args is None else script_args
    if img2img:
        shape = (1, 4, kwargs["height"] // 8, kwargs["width"] // 8)
        latent = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        p = processing.StableDiffusionProcessingImg2Img(init_latent=latent, script_runner=runner,
                                                        script_args=script_args, **kwargs)
    else:
        p = processing.StableDiffusionProcessingTxt2Img(script_runner=runner, script_args=script_args, **kwargs)
    return processing.process_images(p)


_vanilla = {}


def vanilla(**kwargs):
    """The same generation in a webui without the extension (cached per UNet and settings)."""
    key = (id(shared.sd_model.model.diffusion_model), tuple(sorted(kwargs.items())))
    if key not in _vanilla:
        _vanilla[key] = run(None, script_args=[None], runner=scripts.ScriptRunner([]), **kwargs)
    return _vanilla[key]


def params_of(processed):
    return infotext_utils.parse_generation_parameters(processed.info)


def assert_restored(unet, names=None):
    assert hidiffusion.patched(unet) is None
    assert unet.input_blocks[3][0].op.stride == (2, 2)
    for name, module in unet.named_modules():
        assert not module._forward_hooks and not module._forward_pre_hooks, name
    if names is not None:
        assert [n for n, _ in unet.named_modules()] == names


# --- lifecycle -----------------------------------------------------------------------------------------

def test_disabled_run_is_bit_identical_to_no_extension(webui, sd15, spy):
    reference = vanilla(steps=3)
    disabled = run(webui, args(enable=False), steps=3)
    assert torch.equal(disabled.images[0], reference.images[0])
    assert disabled.info == reference.info
    assert not any(call["patched"] for call in spy)


def test_txt2img_lifecycle(webui, sd15, spy, capsys):
    names = [n for n, _ in sd15.named_modules()]
    processed = run(webui, args(native_guard=False), steps=5, n_iter=2)
    assert [c["patched"] for c in spy] == [True] * 10
    # T1 0.4 of 5 steps: the stride-4 downsampler on executed steps 0 and 1 of each batch
    assert [c["stride"] for c in spy[:5]] == [(4, 4)] * 2 + [(2, 2)] * 3
    assert all(c["window"] for c in spy)
    assert all(c["names"] == names for c in spy)          # LoRA's layer names survive
    assert_restored(sd15, names)
    params = params_of(processed)
    assert params["HiDiffusion"] == "RAU-Net+MSW-MSA"
    assert (params["HiDiffusion preset"], params["HiDiffusion T1"], params["HiDiffusion T2"]) == ("SD1.x", "0.4", "0.0")
    assert params["HiDiffusion auto"] == "preset T1 T2 aggressive"
    assert not torch.equal(processed.images[0], vanilla(steps=5).images[0])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("HiDiffusion:")]
    assert len(printed) == 1 and "T1 0.4" in printed[0]    # one line per job, not per batch


def test_img2img_strength_counts_executed_steps(webui, sd15, spy):
    run(webui, args(native_guard=False, window_attention=False), img2img=True, steps=8, denoising_strength=0.5)
    # t_enc = 4, so 5 executed steps: RAD for int(5 * 0.4) = 2, then RAU-Net is over and removed
    assert [c["stride"] for c in spy] == [(4, 4), (4, 4), (2, 2), (2, 2), (2, 2)]
    assert [c["patched"] for c in spy] == [True, True, False, False, False]
    assert_restored(sd15)


def test_second_order_sampler_steps(webui, sd15, monkeypatch):
    seen = []
    original = hidiffusion.Patch.set_step
    def set_step(self, step, total, shift=None):
        seen.append((step, total))
        return original(self, step, total, shift)
    monkeypatch.setattr(hidiffusion.Patch, "set_step", set_step)
    run(webui, args(native_guard=False), steps=3, sampler_name="Heun")
    assert seen == [(0, 3), (0, 3), (1, 3), (1, 3), (2, 3)]     # Heun: two calls per step, one in the last
    assert_restored(sd15)


@pytest.mark.parametrize("passes, first, hires", [("First pass", True, False), ("Hires pass", False, True),
                                                   ("Both", True, True)])
def test_hires_pass_policy(webui, sd15, spy, passes, first, hires):
    processed = run(webui, args(native_guard=False, passes=passes), steps=3, enable_hr=True, hr_scale=1.5,
                    denoising_strength=0.5)
    assert any(c["patched"] for c in spy if not c["hr"]) == first
    assert any(c["patched"] for c in spy if c["hr"]) == hires
    assert_restored(sd15)
    assert params_of(processed)["HiDiffusion passes"] == passes
    if not first:
        assert "first pass 128x128: not applied" in params_of(processed)["HiDiffusion note"]


def test_native_guard_skips_the_native_first_pass(webui, sd15, spy):
    processed = run(webui, args(), width=320, height=64, steps=2, enable_hr=True, hr_scale=2, denoising_strength=0.5)
    assert not any(c["patched"] for c in spy if not c["hr"])
    assert all(c["patched"] for c in spy if c["hr"])
    assert "320x64: not applied: 320x64 is not above the native 512 px" in params_of(processed)["HiDiffusion note"]
    assert_restored(sd15)


def test_exception_mid_sampling_then_clean_vanilla_run(webui, sd15):
    reference = vanilla(steps=3)
    calls = []

    def explode(module, inputs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (test)")
    handle = sd15.middle_block.register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            run(webui, args(native_guard=False), steps=3)
    finally:
        handle.remove()
    assert hidiffusion.patched(sd15) is not None          # postprocess was skipped: the UNet is still patched
    healed = run(webui, args(enable=False), steps=3)        # before_process heals it
    assert_restored(sd15)
    assert torch.equal(healed.images[0], reference.images[0])


def test_interrupt_restores(webui, sd15, spy):
    processed = run(webui, args(native_guard=False), steps=6, n_iter=2, interrupt_at=1)
    assert len(spy) == 2 and all(c["patched"] for c in spy)
    assert len(processed.images) == 1 and "HiDiffusion: RAU-Net+MSW-MSA" in processed.info
    assert_restored(sd15)


def test_refiner_swap_moves_the_patch(webui, sd15, tiny_unets, spy):
    refiner_unet = tiny_unets["sd21"]
    refiner = sd_models.StableDiffusionModel(refiner_unet)
    processed = run(webui, args(native_guard=False), steps=4, refiner_model=refiner, refiner_switch_at=0.5)
    assert [c["unet"] is sd15 for c in spy] == [True, True, False, False]
    assert all(c["patched"] for c in spy)
    assert_restored(sd15)
    assert_restored(refiner_unet)
    assert params_of(processed)["HiDiffusion preset"] == "SD2.x"   # the plan of the UNet that ran last


def test_script_unload_restores(webui, sd15):
    plan = hidiffusion.resolve(hidiffusion.detect(sd15), hidiffusion.Settings(), 256, 256)
    hidiffusion.apply(sd15, plan).set_step(0, 4)
    script_callbacks.script_unloaded_callback()
    assert_restored(sd15)


# --- infotext ------------------------------------------------------------------------------------------

def paste(webui, processed_or_text):
    text = getattr(processed_or_text, "info", processed_or_text)
    updates = infotext_utils.paste(webui["runner"].infotext_fields, infotext_utils.parse_generation_parameters(text))
    return {name: updates.get(component, "unchanged") for name, component in zip(NAMES, webui["inputs"][1:])}


def test_infotext_round_trip_explicit_values(webui, sd15):
    chosen = dict(raunet=True, window_attention=False, preset="SD1.x", auto_timing=False, t1=0.5, t2=0.2,
                  aggressive="Off", passes="First pass", native_guard=False, rau_upsample="bicubic",
                  window_shift="rotate")
    processed = run(webui, args(**chosen), steps=2)
    for key in processed.extra_generation_params:       # every key we wrote survives the webui's key regex
        assert key in params_of(processed)
    assert paste(webui, processed) == dict(chosen, enable=True)


def test_infotext_round_trip_auto(webui, sd15):
    processed = run(webui, args(native_guard=False), steps=2)
    pasted = paste(webui, processed)
    assert pasted["enable"] and pasted["auto_timing"] and pasted["preset"] == "Auto" and pasted["aggressive"] == "Auto"


def test_infotext_without_our_keys_switches_off(webui):
    pasted = paste(webui, "a prompt\nSteps: 20, Sampler: Euler, Seed: 1, Size: 512x512")
    assert pasted == dict(zip(NAMES, [False, True, True, "Auto", True, 0.4, 0.0, "Auto", "Both", True, "nearest",
                                      "random"]))
    assert set(webui["script"].paste_field_names) >= {"HiDiffusion", "HiDiffusion T1", "HiDiffusion passes"}


# --- XYZ -----------------------------------------------------------------------------------------------

LABELS = ["HiDiffusion", "HiDiffusion RAU-Net", "HiDiffusion MSW-MSA", "HiDiffusion preset", "HiDiffusion T1",
          "HiDiffusion T2", "HiDiffusion aggressive", "HiDiffusion passes"]


def test_xyz_axes_registered_once(webui):
    script_callbacks.before_ui_callback()
    script_callbacks.before_ui_callback()
    labels = [o.label for o in webui["xyz"].axis_options]
    assert [label for label in labels if label.startswith("HiDiffusion")] == LABELS


def test_xyz_cells(webui, sd15):
    xyz = webui["xyz"]
    p = processing.StableDiffusionProcessingTxt2Img(script_runner=webui["runner"], steps=2, width=128, height=128,
                                                    script_args=args(enable=False, native_guard=False))
    on, off = xyz.run_axis(p, "HiDiffusion", "True, False")
    assert params_of(on)["HiDiffusion"] == "RAU-Net+MSW-MSA"
    assert not any(k.startswith("HiDiffusion") for k in params_of(off))     # the shared dict was cleaned
    assert torch.equal(off.images[0], vanilla(steps=2).images[0])
    p.script_args = tuple(args(native_guard=False))
    cells = xyz.run_axis(p, "HiDiffusion T1", "0.2, 0.6")
    assert [params_of(c)["HiDiffusion T1"] for c in cells] == ["0.2", "0.6"]
    assert "T1" not in params_of(cells[0])["HiDiffusion auto"]
    assert_restored(sd15)


@pytest.mark.parametrize("label, values, message", [("HiDiffusion T1", "0.2, 1.5", "between 0 and 1"),
                                                    ("HiDiffusion preset", "SDXL, SD3", "expected one of"),
                                                    ("HiDiffusion", "True, maybe", "true or false")])
def test_xyz_bad_values_are_refused(webui, label, values, message):
    p = processing.StableDiffusionProcessingTxt2Img(script_runner=webui["runner"], script_args=args())
    with pytest.raises(RuntimeError, match=message):
        webui["xyz"].run_axis(p, label, values)


# --- API args ------------------------------------------------------------------------------------------

def test_api_dict_form(webui, sd15):
    processed = run(webui, [None, {"enable": True, "t1": 0.5, "native_guard": False}], steps=2)
    params = params_of(processed)
    assert params["HiDiffusion T1"] == "0.5" and params["HiDiffusion auto"] == "preset T2 aggressive"
    assert_restored(sd15)


def test_api_list_with_json_types(webui, sd15):
    # JSON passes through uncoerced: strings for booleans, an int for a float, lower-case choices
    processed = run(webui, [None, "true", 1, "false", "sd1", False, 1, 0, "off", "first", "false"], steps=2)
    params = params_of(processed)
    assert (params["HiDiffusion"], params["HiDiffusion T1"], params["HiDiffusion passes"]) == ("RAU-Net", "1.0",
                                                                                            "First pass")


@pytest.mark.parametrize("script_args, message", [
    (args(auto_timing=False, t1="abc"), "t1: expected a number"),
    (args(auto_timing=False, t1=1.5), "t1: must be between 0 and 1"),
    (args(preset="SD3"), "preset: expected one of"),
    ([None, {"enable": True, "raunet": False, "window_attention": False}], "RAU-Net and MSW-MSA are both off"),
    ([None, {"enable": True, "t1": 0.5, "strength": 2}], "unknown key(s) 'strength'"),
    ([None, {"enable": True, "t1": 0.3, "t2": 0.6}], "T2 (0.6) must not exceed T1 (0.3)"),
    ([None, {"enable": "maybe"}], "enable: expected true or false"),
    ([None, {"enabled": True}], "unknown key(s) 'enabled'"),
])
def test_api_bad_values_generate_without_hidiffusion(webui, sd15, capsys, script_args, message):
    processed = run(webui, script_args, steps=2)
    assert torch.equal(processed.images[0], vanilla(steps=2).images[0])
    params = params_of(processed)
    assert message in params["HiDiffusion error"] and "HiDiffusion" not in params
    assert message in capsys.readouterr().out
    assert_restored(sd15)


# --- other hosts and extensions ------------------------------------------------------------------------

def test_forge_is_refused_with_a_message(webui, sd15):
    forge = sd_models.StableDiffusionModel(sd15)
    forge.forge_objects = object()
    processed = run(webui, args(native_guard=False), steps=2, sd_model=forge)
    assert "Forge is not supported yet" in params_of(processed)["HiDiffusion error"]
    assert_restored(sd15)


def test_controlnet_with_inpainting_model_turns_raunet_off(webui, spy):
    unet = build_unet("sd15", tiny=True, in_channels=9)
    unet._original_forward = unet.forward          # what sd-webui-controlnet's hook leaves on the UNet
    shared.sd_model = sd_models.StableDiffusionModel(unet)
    try:
        processed = run(webui, args(native_guard=False), steps=2)
    finally:
        shared.sd_model = None
    assert all(c["patched"] and c["window"] and c["stride"] == (2, 2) for c in spy)
    assert "RAU-Net off: ControlNet with an inpainting model" in params_of(processed)["HiDiffusion note"]
    assert_restored(unet)


def test_controlnet_with_regular_model_keeps_raunet(webui, sd15, spy):
    sd15._original_forward = sd15.forward
    try:
        processed = run(webui, args(native_guard=False), steps=3)
    finally:
        del sd15._original_forward
    assert spy[0]["stride"] == (4, 4)
    assert "ControlNet resizes its residuals" in params_of(processed)["HiDiffusion note"]


# --- UI ------------------------------------------------------------------------------------------------

def test_ui_components(webui):
    script, inputs = webui["script"], webui["inputs"][1:]
    assert script.section == "accordions" and (script.args_from, script.args_to) == (1, 13)
    assert [c.value for c in inputs] == [False, True, True, "Auto", True, 0.4, 0.0, "Auto", "Both", True,
                                         "nearest", "random"]
    labels = [c.label for c in inputs]
    assert len(set(labels)) == len(labels)                      # ui-config keys do not collide
    assert all(c.webui_tooltip for c in inputs[1:])             # the accordion's text is in its info line
    assert inputs[0].elem_id == "script_txt2img_hidiffusion_enable-checkbox"
    fields = len(script.infotext_fields)
    with gr.Blocks():                                          # the API calls ui() again: no accumulation
        again = script.ui(False)
    assert len(again) == 12 and len(script.infotext_fields) == fields == 12


def test_auto_display_follows_size_and_model(webui, sd15):
    module = webui["module"]
    runner = scripts.ScriptRunner([module.HiDiffusionScript])
    with gr.Blocks() as demo:
        scripts.scripts_current = runner                      # the webui's size controls come first
        gr.Slider(value=512, elem_id="txt2img_width")
        gr.Slider(value=512, elem_id="txt2img_height")
        gr.Checkbox(value=False, elem_id="txt2img_hr-checkbox")
        gr.Slider(value=2.0, elem_id="txt2img_hr_scale")
        gr.Slider(value=0, elem_id="txt2img_hr_resize_x")
        gr.Slider(value=0, elem_id="txt2img_hr_resize_y")
        runner.setup_ui()
    assert len(runner.scripts[0].size_components) == 6
    assert len(demo.dependencies) >= 18                           # every size control and ours update it
    defaults = [c.value for c in runner.inputs[1:]]
    text = module.HiDiffusionScript.auto_text(False, 512, 512, True, 2.0, 0, 0, *defaults)
    assert "first pass 512x512: not applied (not above native 512 px)" in text
    assert "hires pass 1024x1024: SD1.x · T1 0.7, T2 0.3 · MSW-MSA" not in text     # 1024 px is below 2048
    assert "hires pass 1024x1024: SD1.x · T1 0.4, T2 0 · MSW-MSA" in text
    shared.sd_model = None
    assert "once a model is loaded" in module.HiDiffusionScript.auto_text(False, 512, 512, False, 2, 0, 0, *defaults)


def test_install_installs_only_whats_missing(monkeypatch):
    import types
    installed = []
    launch = types.SimpleNamespace(is_installed=lambda name: name == "einops",
                                   run_pip=lambda command, desc=None: installed.append(command))
    monkeypatch.setitem(sys.modules, "launch", launch)
    exec(compile((ROOT / "install.py").read_text(), "install.py", "exec"), {"__name__": "__main__"})
    assert len(installed) == 1 and "omegaconf" in installed[0] and "einops" not in installed[0]


def test_disabled_run_ignores_bad_values(webui, sd15):
    processed = run(webui, args(enable=False, t1="abc", auto_timing=False), steps=2)
    assert processed.info == vanilla(steps=2).info
