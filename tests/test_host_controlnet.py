"""sd-webui-controlnet 1.1.455 with HiDiffusion, in the real webui.

ControlNet computes its residuals at the full latent size; RAU-Net's features are smaller while it
runs. sd-webui-controlnet's `aligned_adding` and the webui's `cat` would resize a mismatch silently
(nearest), or raise for a 9-channel model, so the probe records every such resize: there must be none.
sd-webui-controlnet's ControlNet configuration is fixed at SD1.5's 320 channels, so these tests use
`tiny-sd15-wide` (the real SD1.5 widths, tiny text encoder and VAE), a few seconds per step here.
"""
import pytest
from PIL import Image, ImageDraw

from webui_host.scenario import hidiffusion, observed, png, request
from webui_host.server import decode, info

pytestmark = pytest.mark.webui

STEPS = 3
SETTINGS = hidiffusion(t1=0.67, t2=0.34)        # step 0: RAD+CA, 1: RAD, 2: vanilla
SIZE = dict(width=128, height=128)              # the wide UNet costs seconds a step on 2 cores


@pytest.fixture(scope="module", autouse=True)
def wide_model(webui):
    """Load the wide SD1.5 once for the module (a per-request override would reload it every time)."""
    webui.call("/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sd15-wide"})
    yield
    webui.call("/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sd15"})


@pytest.fixture(scope="module")
def hint():
    image = Image.new("RGB", (128, 128), "black")
    ImageDraw.Draw(image).rectangle((32, 24, 100, 110), outline="white", width=4)
    return png(image)


def unit(image, model="tiny-controlnet-sd15", module="none", **changes):
    return dict(dict(enabled=True, module=module, model=model, image=image, weight=1.0, resize_mode="Crop and Resize",
                     processor_res=128, control_mode="Balanced", pixel_perfect=False, guidance_start=0.0,
                     guidance_end=1.0), **changes)


def run(webui, units, hidiffusion_args=None, endpoint="txt2img", **changes):
    scripts = {"controlnet": {"args": units}} if units else {}
    if hidiffusion_args:
        scripts.update(hidiffusion_args)
    payload = request(alwayson_scripts=scripts, **dict(dict(steps=STEPS, **SIZE), **changes))
    if endpoint == "img2img":
        webui.settle_rng()
    webui.probe("reset")
    response = webui.call(f"/sdapi/v1/{endpoint}", payload)
    return response, webui.probe("calls")


def phases_seen(calls):
    return {(observed(c)["rad"], observed(c)["ca"]) for c in calls}


def test_the_tiny_controlnet_is_listed(webui):
    assert "tiny-controlnet-sd15" in " ".join(webui.call("/controlnet/model_list")["model_list"])


@pytest.fixture(scope="module")
def one_unit(webui, hint):
    return run(webui, [unit(hint)], SETTINGS)


def test_residuals_land_on_features_of_their_own_size_in_every_phase(webui, hint, one_unit):
    alone, _ = run(webui, [unit(hint)])
    hidiffusion_only, _ = run(webui, [], SETTINGS)
    both, calls = one_unit
    assert phases_seen(calls) == {(True, True), (True, False), (False, False)}
    assert all(c["mismatches"] == [] for c in calls), [c["mismatches"] for c in calls if c["mismatches"]][:1]
    assert decode(both) != decode(alone) and decode(both) != decode(hidiffusion_only)
    assert decode(run(webui, [unit(hint)])[0]) == decode(alone)            # ControlNet alone again: restored


def test_two_units_at_once(webui, hint, one_unit):
    two, calls = run(webui, [unit(hint), unit(hint, weight=0.5)], SETTINGS)
    assert all(c["mismatches"] == [] for c in calls) and (True, True) in phases_seen(calls)
    assert decode(two) != decode(one_unit[0])


def test_controlnet_with_the_9_channel_model_keeps_raunet(webui, hint):
    """sd-webui-controlnet pads residuals to a 9-channel UNet's skips before resizing them, which raised
    with RAU-Net's features (kohya Deep Shrink #12). Residuals of the right size make that moot."""
    mask = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(mask).rectangle((32, 32, 96, 96), fill=255)
    inpaint = dict(init_images=[hint], mask=png(mask), denoising_strength=0.9,
                   override_settings={"sd_model_checkpoint": "tiny-sd15-wide-inpainting"})
    scripts = dict(endpoint="img2img", **inpaint)
    alone, _ = run(webui, [unit(hint)], **scripts)
    both, calls = run(webui, [unit(hint)], SETTINGS, **scripts)
    assert all(c["x"][1] == 9 for c in calls) and (True, True) in phases_seen(calls)
    assert all(c["mismatches"] == [] for c in calls)
    assert decode(both) != decode(alone) and "RAU-Net off" not in str(info(both)["extra_generation_params"])


def test_reference_only_keeps_its_self_attention_calls_global(webui, hint):
    reference = unit(hint, model="None", module="reference_only")
    tiny = dict(override_settings={"sd_model_checkpoint": "tiny-sd15"})      # no ControlNet model: any width
    alone, _ = run(webui, [reference], **tiny)
    both, calls = run(webui, [reference], SETTINGS, **tiny)
    assert decode(both) != decode(alone) and (True, True) in phases_seen(calls)
    note = info(both)["extra_generation_params"]["HiDiffusion note"]
    assert "MSW-MSA global in in1,in2,out9,out10,out11: attn1 gets a context (reference attention)" in note


@pytest.mark.parametrize("checkpoint", ["tiny-sd15", "tiny-sd15-inpainting"])
def test_t2i_adapter_features_land_on_features_of_their_own_size(webui, hint, checkpoint):
    """A T2I-Adapter adds its features to the hidden state after input blocks 2, 5, 8 and 11."""
    tiny = dict(override_settings={"sd_model_checkpoint": checkpoint}, steps=6)
    adapter = unit(hint, model="tiny-t2iadapter-sd15")
    alone, _ = run(webui, [adapter], **tiny)
    both, calls = run(webui, [adapter], SETTINGS, **tiny)
    assert phases_seen(calls) >= {(True, True), (True, False), (False, False)}
    assert all(c["mismatches"] == [] for c in calls), [c["mismatches"] for c in calls if c["mismatches"]][:1]
    assert decode(both) != decode(alone)


def test_controlnet_lllite_on_sdxl(webui, hint):
    """LLLite conditions attn1's projections on a token grid it caches per block: windows keep those calls
    global, and its cache is recomputed when a RAU-Net phase changes the grid."""
    sdxl = dict(width=384, height=384, steps=10, override_settings={"sd_model_checkpoint": "tiny-sdxl"})
    lllite = unit(hint, model="tiny-lllite-sdxl")
    alone, _ = run(webui, [lllite], **sdxl)
    both, calls = run(webui, [lllite], hidiffusion(t1=0.6, t2=0.3, aggressive="Off"), **sdxl)
    assert {(observed(c, "sdxl")["rad"], observed(c, "sdxl")["ca"]) for c in calls} == \
        {(True, True), (False, True), (False, False)}
    assert decode(both) != decode(alone)
    note = info(both)["extra_generation_params"]["HiDiffusion note"]
    assert "ControlNet-LLLite conditions its projections on the whole grid" in note
