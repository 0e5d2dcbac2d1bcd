"""SD2.x-v, SDXL, SDXL inpainting, the refiner, model switches, HyperTile and Token Merging, in the real
webui. Every model is a tiny checkpoint of the real layout (tests/webui_host/checkpoints.py)."""
import pytest
from PIL import Image, ImageDraw

from webui_host.scenario import assert_clean, hidiffusion, observed, png, request
from webui_host.server import decode, info

pytestmark = pytest.mark.webui

SDXL = {"sd_model_checkpoint": "tiny-sdxl"}
SD2V = {"sd_model_checkpoint": "tiny-sd21-v"}


def generate(server, **payload):
    server.probe("reset")
    response = server.txt2img(**payload)
    return response, server.probe("calls")


def ours(response):
    return {k: v for k, v in info(response)["extra_generation_params"].items() if k.startswith("HiDiffusion")}


@pytest.mark.parametrize("checkpoint, layout, size, rad, ca, preset", [
    # SDXL below 4096 px: aggressive, RAD for int(10 * 0.16) = 1 step, then CA until int(10 * 0.4) = 4
    (SDXL, "sdxl", 384, [True] + [False] * 9, [False, True, True, True] + [False] * 6,
     {"HiDiffusion preset": "SDXL", "HiDiffusion T1": 0.4, "HiDiffusion T2": 0.0, "HiDiffusion aggressive": True}),
    (SD2V, "sd", 256, [True] * 4 + [False] * 6, [False] * 10,
     {"HiDiffusion preset": "SD2.x", "HiDiffusion T1": 0.4, "HiDiffusion T2": 0.0, "HiDiffusion aggressive": False}),
], ids=["SDXL", "SD2.x-v"])
def test_sdxl_and_sd2_v_txt2img(webui, webui_without_extension, checkpoint, layout, size, rad, ca, preset):
    payload = request(steps=10, width=size, height=size, override_settings=checkpoint)
    plain = decode(webui_without_extension.txt2img(**payload))
    assert decode(webui.txt2img(**payload)) == plain
    response, calls = generate(webui, **payload, alwayson_scripts=hidiffusion())
    assert decode(response) != plain and decode(webui.txt2img(**payload, alwayson_scripts=hidiffusion())) == decode(response)
    assert all(c["model"] == checkpoint["sd_model_checkpoint"] for c in calls)
    assert [observed(c, layout)["rad"] for c in calls] == rad
    assert [observed(c, layout)["ca"] for c in calls] == ca
    assert all(observed(c, layout)["windowed"] for c in calls)
    assert preset.items() <= ours(response).items()
    assert decode(webui.txt2img(**payload)) == plain
    assert_clean(webui)


def test_sdxl_inpainting_model(webui, webui_without_extension):
    init = webui.txt2img(**request(steps=3, width=384, height=384, override_settings=SDXL))["images"][0]
    mask = Image.new("L", (384, 384), 0)
    ImageDraw.Draw(mask).ellipse((96, 96, 288, 288), fill=255)
    payload = request(init_images=[init], mask=png(mask), mask_blur=4, steps=10, width=384, height=384,
                      denoising_strength=0.75, override_settings={"sd_model_checkpoint": "tiny-sdxl-inpainting"})
    plain = decode(webui_without_extension.img2img(**payload))
    webui.settle_rng()
    webui.probe("reset")
    response = webui.call("/sdapi/v1/img2img", dict(payload, alwayson_scripts=hidiffusion()))
    calls = webui.probe("calls")
    assert all(c["x"][1] == 9 for c in calls) and decode(response) != plain
    # inpainting turns aggressive off (as the official code does): CA for int(8 * 0.4) = 3 calls, no RAD
    assert [observed(c, "sdxl")["ca"] for c in calls] == [i < 3 for i in range(len(calls))]
    assert not any(observed(c, "sdxl")["rad"] for c in calls) and all(observed(c, "sdxl")["windowed"] for c in calls)
    assert ours(response)["HiDiffusion aggressive"] is False
    assert decode(webui.img2img(**payload)) == plain
    assert_clean(webui)


@pytest.fixture
def base_and_refiner_stay_loaded(webui):
    """Keep base and refiner in memory after the request, so the state of both can be read."""
    webui.call("/sdapi/v1/options", {"sd_checkpoints_limit": 2})
    yield
    webui.call("/sdapi/v1/options", {"sd_checkpoints_limit": 1, "sd_model_checkpoint": "tiny-sd15"})


def test_refiner_switch_mid_sampling(webui, webui_without_extension, base_and_refiner_stay_loaded):
    payload = request(steps=10, width=384, height=384, override_settings=SDXL,
                      refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5)
    plain = decode(webui_without_extension.txt2img(**payload))
    response, calls = generate(webui, **payload, override_settings_restore_afterwards=False,
                               alwayson_scripts=hidiffusion())
    base = [c for c in calls if c["model"] == "tiny-sdxl"]
    refiner = [c for c in calls if c["model"] == "tiny-sdxl-refiner"]
    assert base and refiner and len(base) + len(refiner) == len(calls)
    assert all(observed(c, "sdxl")["windowed"] for c in base) and observed(base[0], "sdxl")["rad"]
    for call in refiner:            # vanilla: no window batch, no shrunk skip
        assert all(shape[0] == call["x"][0] for shapes in call["attn1"].values() for shape in shapes)
        assert call["skips"][3] == [(call["skips"][2][0] + 1) // 2, (call["skips"][2][1] + 1) // 2]
    note = ours(response)["HiDiffusion note"]
    assert "not applied" in note and "SDXL refiner" in note
    assert decode(response) != plain
    assert {m["checkpoint"] for m in assert_clean(webui)} == {"tiny-sdxl", "tiny-sdxl-refiner"}
    base_only = request(steps=10, width=384, height=384, override_settings=SDXL)
    assert decode(webui.txt2img(**base_only)) == decode(webui_without_extension.txt2img(**base_only))


def test_model_switches_with_hidiffusion_on(webui):
    """SD1.5 -> SDXL -> SD1.5: each image equals the one made with no switch before it."""
    sd15 = request(alwayson_scripts=hidiffusion())
    sdxl = request(width=384, height=384, override_settings=SDXL, alwayson_scripts=hidiffusion())
    reference = {}
    for name, payload in (("sd15", sd15), ("sdxl", sdxl)):
        webui.txt2img(**payload)
        reference[name] = decode(webui.txt2img(**payload))
    for name, payload, preset in (("sd15", sd15, "SD1.x"), ("sdxl", sdxl, "SDXL"), ("sd15", sd15, "SD1.x")):
        response = webui.txt2img(**payload)
        assert decode(response) == reference[name] and ours(response)["HiDiffusion preset"] == preset
        assert_clean(webui)


@pytest.fixture
def hypertile_off_afterwards(webui, webui_without_extension):
    """The test keeps its settings after its requests (to read the model's state): put them back."""
    yield
    for server in (webui, webui_without_extension):
        server.txt2img(**request(steps=1, width=64, height=64, override_settings_restore_afterwards=False,
                                 override_settings={"hypertile_enable_unet": False, "sd_model_checkpoint": "tiny-sd15"}))


def test_with_hypertile(webui, webui_without_extension, hypertile_off_afterwards):
    """HyperTile tiles inside each MSW-MSA window. It hooks attn1 once per model and for good, so it gets a
    model of its own, kept loaded after the request so that its state can be read."""
    settings = dict(SD2V, hypertile_enable_unet=True, hypertile_max_depth_unet=3, hypertile_max_tile_unet=8)
    payload = request(override_settings=settings, override_settings_restore_afterwards=False)
    alone = decode(webui_without_extension.txt2img(**payload))
    assert decode(webui.txt2img(**payload)) == alone
    baseline = webui.probe("state")             # with HyperTile's own attn1 forwards on the model
    response, calls = generate(webui, **payload, alwayson_scripts=hidiffusion())
    assert decode(response) != alone
    assert [observed(c)["rad"] for c in calls] == [True, True, False, False, False, False]
    assert all(observed(c)["windowed"] for c in calls)
    assert decode(webui.txt2img(**payload)) == alone
    assert_clean(webui, baseline)


def test_with_token_merging(webui, webui_without_extension):
    """ToMe hands the level-0 self-attention merged tokens: those calls stay global, and the note says so."""
    payload = request(override_settings={"token_merging_ratio": 0.5})
    alone = decode(webui_without_extension.txt2img(**payload))
    response, calls = generate(webui, **payload, alwayson_scripts=hidiffusion())
    assert decode(response) != alone
    assert [observed(c)["rad"] for c in calls] == [True, True, False, False, False, False]
    assert all(len(c["attn1"]["in1.0"]) == 1 and c["attn1"]["in1.0"][0][1] < 32 * 32 for c in calls)
    assert not any(observed(c)["windowed"] for c in calls)
    assert "MSW-MSA global in in1,in2,out9,out10,out11: its tokens are merged (Token Merging)" in \
        ours(response)["HiDiffusion note"]
    assert decode(webui.txt2img(**payload)) == alone
    assert_clean(webui)
