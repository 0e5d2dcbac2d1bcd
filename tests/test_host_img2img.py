"""img2img and inpainting in the real webui: HiDiffusion on the steps the webui really executes."""
import pytest
from PIL import Image, ImageDraw

from webui_host.scenario import hidiffusion, observed, png, request
from webui_host.server import decode, info

pytestmark = pytest.mark.webui

INPAINTING = {"sd_model_checkpoint": "tiny-sd15-inpainting"}


@pytest.fixture(scope="module")
def init_image(webui):
    return webui.txt2img(**request(steps=3))["images"][0]


@pytest.fixture(scope="module")
def mask():
    image = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(image).rectangle((80, 96, 176, 200), fill=255)
    return png(image)


def img2img(server, init_image, args=None, **changes):
    payload = request(init_images=[init_image], steps=10, **changes)
    if args is not None:
        payload["alwayson_scripts"] = args
    server.settle_rng()
    server.probe("reset")
    response = server.call("/sdapi/v1/img2img", payload)
    return response, server.probe("calls")


@pytest.mark.parametrize("strength, calls_run", [(0.3, 4), (0.75, 8)])    # int(strength * 10) + 1
def test_img2img_strengths(webui, webui_without_extension, init_image, strength, calls_run):
    plain = decode(webui_without_extension.img2img(**request(init_images=[init_image], steps=10,
                                                             denoising_strength=strength)))
    response, calls = img2img(webui, init_image, hidiffusion(), denoising_strength=strength)
    assert len(calls) == calls_run and decode(response) != plain
    assert [observed(c)["rad"] for c in calls] == [i < int(calls_run * 0.4) for i in range(calls_run)]
    assert all(observed(c)["windowed"] for c in calls)
    assert decode(img2img(webui, init_image, denoising_strength=strength)[0]) == plain


@pytest.mark.parametrize("only_masked", [False, True], ids=["whole picture", "only masked"])
def test_inpainting_with_the_9_channel_model(webui, webui_without_extension, init_image, mask, only_masked):
    inpaint = dict(mask=mask, mask_blur=4, inpainting_fill=1, inpaint_full_res=only_masked,
                   inpaint_full_res_padding=32, denoising_strength=0.75, override_settings=INPAINTING)
    plain = decode(webui_without_extension.img2img(**request(init_images=[init_image], steps=10, **inpaint)))
    response, calls = img2img(webui, init_image, hidiffusion(), **inpaint)
    assert calls and all(c["x"][1] == 9 for c in calls)             # latent, masked image and mask
    assert [observed(c)["rad"] for c in calls] == [i < int(len(calls) * 0.4) for i in range(len(calls))]
    assert all(observed(c)["windowed"] for c in calls)
    assert decode(response) != plain
    params = info(response)["extra_generation_params"]
    assert params["HiDiffusion preset"] == "SD1.x" and params["HiDiffusion aggressive"] is False
    assert decode(img2img(webui, init_image, **inpaint)[0]) == plain
