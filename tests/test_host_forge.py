"""HiDiffusion in the real WebUI Forge (lllyasviel/stable-diffusion-webui-forge dfdcbab6), and in Forge Classic
where a git directory of it is at hand, installed as a user installs it: pixels, infotext, where RAU-Net and
MSW-MSA ran (the probe), and the model left clean.

Forge's UNet is its own class (`backend.nn.unet`), reached through `sd_model.forge_objects`; its ControlNet
is built in and hands the residuals to the UNet as its `control` argument, dropping any whose size differs
with "control could not be applied"; its LoRA is merged into the weights before sampling. The model is the
smallest SD1.5 Forge recognises with the real block layout (forge_checkpoints.py): 128 px images and 4 steps
keep a generation to a few seconds, most of them the full-size VAE.
"""
import json

import pytest
from PIL import Image, ImageDraw

from webui_host.scenario import (assert_clean, assert_xyz_choices, hidiffusion, observed, our_lines, paused_run, png,
                                 request, xyz)
from webui_host.server import decode, info

pytestmark = pytest.mark.webui

SMALL = dict(width=128, height=128, steps=4)          # T1 0.4: RAD in call 0 only, int(4 * 0.4) = 1
# Forge's API leaves the hires pass's module choice empty, which its hires fix cannot read.
HIRES = dict(enable_hr=True, hr_scale=2, denoising_strength=0.5, hr_second_pass_steps=4, hr_upscaler="Latent",
             hr_additional_modules=["Use same choices"])
CONTROL_WARNING = "control could not be applied"
PLAIN_INFOTEXT = "a plain image\nSteps: 4, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 128x128"


def small(**changes):
    return request(**dict(SMALL, **changes))


def generate(server, payload, endpoint="txt2img"):
    if endpoint == "img2img":
        server.settle_rng()
    server.probe("reset")
    response = server.call(f"/sdapi/v1/{endpoint}", payload)
    return response, server.probe("calls")


def ran(calls, what):
    return [observed(c)[what] for c in calls]


@pytest.fixture(scope="module")
def plain(forge_without_extension):
    return decode(forge_without_extension.txt2img(**small()))


def test_disabled_is_no_extension_enabled_differs_reproducibly_and_the_model_is_restored(forge, plain):
    assert decode(forge.txt2img(**small())) == plain
    before = assert_clean(forge)        # Forge loads its model at the first generation
    assert decode(forge.txt2img(**small(alwayson_scripts={"HiDiffusion": {"args": [False]}}))) == plain

    enabled, calls = generate(forge, small(alwayson_scripts=hidiffusion()))
    assert decode(enabled) != plain
    assert decode(forge.txt2img(**small(alwayson_scripts=hidiffusion()))) == decode(enabled)
    assert ran(calls, "rad") == [True, False, False, False] and all(ran(calls, "windowed"))

    after, calls = generate(forge, small())
    assert decode(after) == plain and not any(ran(calls, "rad") + ran(calls, "windowed"))
    assert assert_clean(forge) == before      # no hook left, vanilla convs, same parameter names and keys

    params = info(enabled)["extra_generation_params"]
    assert {k: v for k, v in params.items() if k.startswith("HiDiffusion")} == {
        "HiDiffusion": "RAU-Net+MSW-MSA", "HiDiffusion auto": "preset T1 T2 aggressive",
        "HiDiffusion passes": "Both", "HiDiffusion native guard": False, "HiDiffusion preset": "SD1.x",
        "HiDiffusion T1": 0.4, "HiDiffusion T2": 0.0, "HiDiffusion aggressive": False}


@pytest.mark.parametrize("passes, first, hires", [("Both", True, True), ("First pass", True, False),
                                                  ("Hires pass", False, True)])
def test_hires_fix_apply_to(forge, forge_without_extension, passes, first, hires):
    payload = small(**HIRES)
    plain_hires = decode(forge_without_extension.txt2img(**payload))
    response, calls = generate(forge, dict(payload, alwayson_scripts=hidiffusion(passes=passes)))
    assert decode(response) != plain_hires and decode(response)[0] == (256, 256)
    assert [c["hr"] for c in calls] == [False] * 4 + [True] * (len(calls) - 4)
    for call in calls:
        assert observed(call)["windowed"] == (hires if call["hr"] else first), call
    assert [observed(c)["rad"] for c in calls if c["hr"]][:1] == [hires]
    assert ran(calls[:4], "rad") == [first, False, False, False]
    assert info(response)["extra_generation_params"]["HiDiffusion passes"] == passes


@pytest.fixture(scope="module")
def source():
    image = Image.new("RGB", (128, 128), "navy")
    ImageDraw.Draw(image).ellipse((24, 24, 104, 104), fill="orange")
    return png(image)


def test_img2img(forge, forge_without_extension, source):
    payload = small(init_images=[source], denoising_strength=0.75)
    plain_img2img = decode(forge_without_extension.img2img(**payload))
    assert decode(forge.img2img(**payload)) == plain_img2img
    response, calls = generate(forge, dict(payload, alwayson_scripts=hidiffusion()), "img2img")
    assert decode(response) != plain_img2img
    assert ran(calls, "rad")[0] and all(ran(calls, "windowed"))
    assert decode(forge.img2img(**dict(payload, alwayson_scripts=hidiffusion()))) == decode(response)
    assert_clean(forge)


def test_a_bad_payload_makes_the_image_without_hidiffusion_and_says_why(forge, plain):
    message = "t1: expected a number from 0 to 1 or 'auto', got 'abc'"
    forge.probe("reset")
    response = forge.call("/sdapi/v1/txt2img", small(alwayson_scripts=hidiffusion(t1="abc")), check=False)
    log = forge.check_log()
    assert decode(response) == plain
    assert not any(ran(forge.probe("calls"), "rad") + ran(forge.probe("calls"), "windowed"))
    assert message in info(response)["extra_generation_params"]["HiDiffusion error"]
    lines = our_lines(log)
    assert len(lines) == 1 and message in lines[0] and "generating without HiDiffusion" in lines[0], lines


def test_infotext_pastes_back_through_the_api(forge, forge_build, forge_without_extension):
    """png-info parses our infotext; the request's `infotext` field fills the script args through our paste
    fields (the API path of the paste-back): every setting comes back, and the same image. Forge's own
    `infotext` field fails on every request, with or without extensions (its `hr_additional_modules` is a
    `List[str]`, which its type check cannot take): that is pinned here, and its page's paste-back is
    tested in the browser (test_host_browser.py)."""
    chosen = hidiffusion(preset="SD1.x", t1=0.55, t2=0.25, aggressive="Off", rau_upsample="bicubic",
                         window_shift="rotate")
    original = forge.txt2img(**small(alwayson_scripts=chosen))
    parsed = forge.call("/sdapi/v1/png-info", {"image": "data:image/png;base64," + original["images"][0]})
    assert parsed["parameters"]["HiDiffusion T1"] == "0.55"
    assert parsed["parameters"]["HiDiffusion window shift"] == "rotate"
    if forge_build.webui.name == "stable-diffusion-webui-forge":
        with forge_without_extension.expect_error("cannot be a parameterized generic"):
            response = forge_without_extension.call("/sdapi/v1/txt2img", small(infotext=PLAIN_INFOTEXT), check=False)
        assert response["status"] == 500
        return
    again = forge.txt2img(**small(infotext=parsed["info"]))
    ours = [{k: v for k, v in info(r)["extra_generation_params"].items() if k.startswith("HiDiffusion")}
            for r in (original, again)]
    assert ours[0] == ours[1] and ours[0]["HiDiffusion window shift"] == "rotate"
    assert decode(again) == decode(original)


def test_xyz_axis_also_as_the_first_generation(forge_fresh):
    """The plot checks each cell against the loaded model before it starts; in Forge the first generation
    loads the model, so before it there is none to check (a plot was refused for that)."""
    assert_xyz_choices(forge_fresh)
    args = xyz(forge_fresh, ("HiDiffusion T1", ["0.2", "0.7"]))
    forge_fresh.probe("reset")
    plot = forge_fresh.txt2img(**small(steps=5, script_name="x/y/z plot", script_args=args,
                                       alwayson_scripts=hidiffusion()))
    texts = info(plot)["infotexts"]
    assert "HiDiffusion T1: 0.2" in texts[1] and "HiDiffusion T1: 0.7" in texts[2]
    assert decode(plot, 1) != decode(plot, 2)
    rad = ran(forge_fresh.probe("calls"), "rad")    # int(5 * 0.2) = 1 call, then int(5 * 0.7) = 3
    assert rad == [True] + [False] * 4 + [True] * 3 + [False] * 2


@pytest.fixture(scope="module")
def hint():
    image = Image.new("RGB", (128, 128), "black")
    ImageDraw.Draw(image).rectangle((32, 24, 100, 110), outline="white", width=4)
    return png(image)


def test_controlnet_residuals_land_on_features_of_their_size(forge, hint):
    """Forge's own ControlNet, one unit: with RAU-Net on, every residual must be added (none dropped)."""
    model = next(m for m in forge.call("/controlnet/model_list")["model_list"] if m.startswith("forge-controlnet"))
    unit = dict(enabled=True, module="None", model=model, image=hint, weight=1.0, resize_mode="Crop and Resize")
    controlnet = {"ControlNet": {"args": [unit]}}
    settings = hidiffusion(t1=0.5, t2=0.25)         # call 0: RAD+CA, call 1: RAD, then vanilla
    control_only = decode(forge.txt2img(**small(alwayson_scripts=controlnet)))
    hidiffusion_only = decode(forge.txt2img(**small(alwayson_scripts=settings)))
    start = len(forge.log())
    response, calls = generate(forge, small(alwayson_scripts=dict(controlnet, **settings)))
    assert CONTROL_WARNING not in forge.log()[start:]
    assert [(observed(c)["rad"], observed(c)["ca"]) for c in calls] == [(True, True), (True, False),
                                                                        (False, False), (False, False)]
    assert "ControlNet 0" in info(response)["extra_generation_params"]
    assert decode(response) not in (control_only, hidiffusion_only)
    assert decode(forge.txt2img(**small(alwayson_scripts=dict(controlnet, **settings)))) == decode(response)
    assert_clean(forge)


def test_lora_takes_effect_with_hidiffusion_on(forge, plain):
    """Forge merges a LoRA into the weights before sampling; this one also changes the conv RAD strides."""
    lora = dict(prompt=request()["prompt"] + " <lora:tiny-lora:1>")
    with_lora = decode(forge.txt2img(**small(**lora)))
    hidiffusion_only = decode(forge.txt2img(**small(alwayson_scripts=hidiffusion())))
    both, calls = generate(forge, small(**lora, alwayson_scripts=hidiffusion()))
    assert with_lora != plain and decode(both) not in (with_lora, hidiffusion_only)
    assert ran(calls, "rad")[0] and all(ran(calls, "windowed"))
    assert "tiny-lora" in json.dumps(info(both))
    assert decode(forge.txt2img(**small())) == plain          # the LoRA is unmerged, HiDiffusion removed
    assert_clean(forge)


def plain_again(forge, plain_six):
    """The next plain run gives the plain pixels, runs vanilla, and leaves the shared UNet module clean."""
    forge.probe("reset")
    assert decode(forge.txt2img(**small(steps=6))) == plain_six
    assert not any(ran(forge.probe("calls"), "rad") + ran(forge.probe("calls"), "windowed"))
    assert_clean(forge)


@pytest.fixture(scope="module")
def plain_six(forge_without_extension):
    return decode(forge_without_extension.txt2img(**small(steps=6)))


RAD_FOR_FOUR_CALLS = small(steps=6, alwayson_scripts=hidiffusion(t1=0.8))


def test_interrupt_in_the_middle_of_raunet(forge, plain_six):
    response, calls = paused_run(forge, RAD_FOR_FOUR_CALLS, 2, "interrupt")
    assert len(response["images"]) == 1
    assert ran(calls, "rad") == [True, True, True]         # stopped after call 2, RAD still on
    plain_again(forge, plain_six)


def test_an_exception_inside_the_unet_leaves_nothing_behind(forge, plain_six):
    forge.probe("reset", raise_at_call=2)
    with forge.expect_error("failure injected"):
        failed = forge.call("/sdapi/v1/txt2img", RAD_FOR_FOUR_CALLS, check=False)
    assert failed["status"] == 500 and "failure injected" in json.dumps(failed)      # its "message" (A1111: "errors")
    assert ran(forge.probe("calls")[:2], "rad") == [True, True]      # it failed with RAU-Net active
    plain_again(forge, plain_six)


def test_ui_mode_builds_the_panel_in_both_tabs(forge_ui):
    """Forge's gradio 4 page: the accordion and every control of ours, in txt2img and img2img (a startup
    traceback, such as an event our wiring could not register, fails the test through the log check)."""
    config = forge_ui.call("/config")
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    for tab in ("txt2img", "img2img"):
        assert {f"script_{tab}_hidiffusion_{name}" for name in ("t1", "t2", "preset")} <= ids, sorted(
            i for i in ids if i and "hidiffusion" in i)
