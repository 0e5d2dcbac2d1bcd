"""The extension inside a real AUTOMATIC1111 webui (1.10.x), through its HTTP API.

Skipped unless WEBUI_DIR points to a webui checkout whose environment can start (see README "Testing
against a real webui"). The extension is linked into WEBUI_DIR/extensions/ when it is not there yet.
With WEBUI_URL set to a running server (started with --api and this extension) that server is used.

    WEBUI_DIR     webui checkout (required)
    WEBUI_URL     use this running server instead of starting one
    WEBUI_PYTHON  interpreter of the webui's venv (default: this one)
    WEBUI_ARGS    extra launch.py arguments, e.g. "--ckpt test/test_files/empty.pt"
    WEBUI_TIMEOUT seconds to wait for startup (default 600)
"""
import base64
import io
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

pytestmark = [pytest.mark.webui,
              pytest.mark.skipif(not os.environ.get("WEBUI_DIR"), reason="WEBUI_DIR is not set")]

ROOT = Path(__file__).resolve().parents[1]
PORT = 7899
LABELS = ["HiDiffusion", "RAU-Net", "MSW-MSA", "Model preset", "Auto T1/T2", "T1", "T2", "Aggressive", "Apply to",
          "Only above native resolution", "RAU upsampling", "Window shift"]


def call(url, path, payload=None, timeout=600):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def reachable(url):
    try:
        call(url, "/sdapi/v1/scripts", timeout=5)
        return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if os.environ.get("WEBUI_URL"):
        yield os.environ["WEBUI_URL"].rstrip("/")
        return
    webui = Path(os.environ["WEBUI_DIR"]).resolve()
    link = webui / "extensions" / "sd-webui-hidiffusion"
    if not link.exists():
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(ROOT, target_is_directory=True)
    url = f"http://127.0.0.1:{PORT}"
    command = [os.environ.get("WEBUI_PYTHON", sys.executable), "launch.py", "--skip-prepare-environment",
               "--skip-torch-cuda-test", "--nowebui", "--api", "--port", str(PORT), "--use-cpu", "all", "--no-half",
               "--no-download-sd-model", "--disable-nan-check", "--server-name", "127.0.0.1", *shlex.split(os.environ.get("WEBUI_ARGS", ""))]
    env = dict(os.environ, IGNORE_CMD_ARGS_ERRORS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = open(tmp_path_factory.mktemp("webui") / "webui.log", "w")
    process = subprocess.Popen(command, cwd=webui, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + float(os.environ.get("WEBUI_TIMEOUT", 600))
    while not reachable(url):
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail(f"the webui did not start; see {log.name}")
        time.sleep(2)
    yield url
    process.terminate()
    process.wait(60)
    log.close()


def txt2img(url, alwayson=None, **extra):
    payload = dict(prompt="a house", steps=3, width=64, height=64, seed=1, sampler_name="Euler", **extra)
    if alwayson is not None:
        payload["alwayson_scripts"] = {"HiDiffusion": {"args": alwayson}}
    return call(url, "/sdapi/v1/txt2img", payload)


def pixels(response, index=0):
    """The decoded image: the PNG bytes also carry the infotext, which differs between requests."""
    picture = Image.open(io.BytesIO(base64.b64decode(response["images"][index])))
    return picture.size, picture.mode, picture.tobytes()


def test_script_info_lists_the_args_in_documented_order(server):
    infos = [s for s in call(server, "/sdapi/v1/script-info") if s["name"] == "hidiffusion"]
    assert {s["is_img2img"] for s in infos} == {False, True}
    for info in infos:
        assert info["is_alwayson"] and [a["label"] for a in info["args"]] == LABELS


def test_disabled_equals_no_extension_and_enabled_restores(server):
    plain = pixels(txt2img(server))
    assert pixels(txt2img(server, [False])) == plain
    enabled = txt2img(server, [{"enable": True, "native_guard": False}])
    info = json.loads(enabled["info"])
    assert info["extra_generation_params"]["HiDiffusion"] == "RAU-Net+MSW-MSA"
    assert "HiDiffusion T1" in info["extra_generation_params"]
    assert pixels(txt2img(server)) == plain                 # the UNet is restored after the run


def test_bad_args_generate_without_hidiffusion(server):
    response = txt2img(server, [{"enable": True, "t1": 3}])
    params = json.loads(response["info"])["extra_generation_params"]
    assert "must be between 0 and 1" in params["HiDiffusion error"] and "HiDiffusion" not in params
    assert pixels(response) == pixels(txt2img(server))


def test_xyz_axis_over_the_api(server):
    xyz = next(s for s in call(server, "/sdapi/v1/script-info") if s["name"] == "x/y/z plot" and not s["is_img2img"])
    choices = next(a["choices"] for a in xyz["args"] if a["choices"] and "Seed" in a["choices"])
    assert "HiDiffusion T1" in choices                    # registered at import, so present in API-only mode
    # xyz_grid.run in 1.10: axes, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds,
    # vary_seeds_x/y/z, margin_size, csv_mode
    args = [choices.index("HiDiffusion T1"), "0.3, 0.5", [], 0, "", [], 0, "", [], True, True, False, False,
            False, False, False, 0, False]
    response = txt2img(server, [{"enable": True, "native_guard": False}], script_name="x/y/z plot", script_args=args)
    assert len(response["images"]) == 3                   # the grid, then one image per T1 value
    assert pixels(response, 1) != pixels(response, 2)
    infotexts = json.loads(response["info"])["infotexts"]
    assert any("HiDiffusion T1: 0.3" in text for text in infotexts)
    assert any("HiDiffusion T1: 0.5" in text for text in infotexts)


def test_hires_fix_and_img2img_apply_and_restore(server):
    hires = dict(enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.5)
    plain = pixels(txt2img(server, **hires))
    enabled = txt2img(server, [{"enable": True, "native_guard": False, "passes": "Hires pass"}], **hires)
    assert json.loads(enabled["info"])["extra_generation_params"]["HiDiffusion passes"] == "Hires pass"
    assert pixels(enabled) != plain and pixels(enabled)[0] == (128, 128)
    assert pixels(txt2img(server, **hires)) == plain

    init = txt2img(server)["images"][0]
    img2img = dict(prompt="a house", steps=4, width=64, height=64, seed=1, sampler_name="Euler",
                   init_images=[init], denoising_strength=0.5)
    before = pixels(call(server, "/sdapi/v1/img2img", img2img))
    payload = dict(img2img, alwayson_scripts={"HiDiffusion": {"args": [{"enable": True, "native_guard": False}]}})
    patched = call(server, "/sdapi/v1/img2img", payload)
    assert "HiDiffusion T1" in json.loads(patched["info"])["extra_generation_params"]
    assert pixels(patched) != before
    assert pixels(call(server, "/sdapi/v1/img2img", img2img)) == before
