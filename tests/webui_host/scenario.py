"""What the host tests send and how they read what the probe saw.

Sizes are small so that a generation takes a fraction of a second on the tiny models; the native-size
guard is off wherever HiDiffusion must run below 512 px.
"""
import base64
import io
import math
import time
from concurrent.futures import ThreadPoolExecutor

PROMPT = "a lighthouse on a cliff at dusk"
NEGATIVE = "blurry"


def request(**changes) -> dict:
    """A txt2img payload: 256x256, 6 Euler steps, seed 1."""
    return dict(dict(prompt=PROMPT, negative_prompt=NEGATIVE, steps=6, width=256, height=256, seed=1,
                     sampler_name="Euler", scheduler="Automatic", cfg_scale=5), **changes)


def hidiffusion(**values) -> dict:
    """`alwayson_scripts` turning HiDiffusion on with the dict form (guard off: the sizes are small)."""
    return {"HiDiffusion": {"args": [dict(dict(enable=True, native_guard=False), **values)]}}


def halved(size: int, times: int = 1) -> int:
    for _ in range(times):
        size = math.ceil(size / 2)
    return size


# Where the two RAU-Net switches show in a probe record: the Downsample block whose stride RAD changes,
# and the block whose output CA pools (presets.yaml), and the first windowed attn1.
LAYOUT = {"sd": dict(rad=3, ca=4, window="in1.0"), "sdxl": dict(rad=6, ca=4, window="in4.0")}


def observed(call: dict, layout: str = "sd") -> dict:
    """What ran in one UNet call, read from the shapes the probe recorded."""
    blocks = LAYOUT[layout]
    skips = call["skips"]
    before_rad, at_rad = skips[blocks["rad"] - 1][0], skips[blocks["rad"]][0]
    before_ca, at_ca = skips[blocks["ca"] - 1][0], skips[blocks["ca"]][0]
    window_calls = call["attn1"][blocks["window"]]
    return dict(rad=at_rad == math.ceil(before_rad / 4) != math.ceil(before_rad / 2),
                ca=at_ca == math.ceil(before_ca / 2) != before_ca,
                windowed=sum(shape[0] for shape in window_calls) == 4 * call["x"][0])


def phases(calls, layout: str = "sd"):
    """[(noise level, RAD on, CA on)] per UNet call."""
    return [(c["sigma"], observed(c, layout)["rad"], observed(c, layout)["ca"]) for c in calls]


def png(image) -> str:
    """A PIL image as the base64 PNG the API takes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def assert_clean(server, baseline=None):
    """The loaded models as a run without HiDiffusion leaves them: vanilla Downsample convs, and no hook
    or instance forward but the probe's (or exactly `baseline`, when another feature keeps its own)."""
    state = server.probe("state")
    for model in state:
        assert all(conv == [[2, 2], [1, 1], [1, 1]] for conv in model["downsample_convs"].values()), model
        if baseline is None:
            assert model["foreign_hooks"] == [] and model["forward_overrides"] == [], model
    if baseline is not None:
        assert state == baseline
    return state


def our_lines(log: str):
    return [line for line in log.splitlines() if line.startswith("HiDiffusion:")]


def xyz(webui, x, y=None):
    """x/y/z plot script args (A1111 1.10.1 and Forge): each axis (type, values as text, values as a list:
    axes with choices read the list), then draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds,
    vary_seeds x/y/z, margin_size, csv_mode. Axes are looked up by label: indices differ between modes."""
    script = next(s for s in webui.call("/sdapi/v1/script-info") if s["name"] == "x/y/z plot" and not s["is_img2img"])
    choices = next(a["choices"] for a in script["args"] if a["choices"] and "Seed" in a["choices"])
    axes = []
    for label, values in (x, y or ("Nothing", []), ("Nothing", [])):
        axes += [choices.index(label), ", ".join(values), values]
    return axes + [True, True, False, False, False, False, False, 0, False]


def assert_xyz_choices(server):
    """The value dropdown of each HiDiffusion axis with choices lists them (the grid calls `choices()`)."""
    choices = server.probe("xyz-choices")
    assert {axis: choices[axis] for axis in ("HiDiffusion", "HiDiffusion RAU-Net", "HiDiffusion MSW-MSA")} == \
        dict.fromkeys(("HiDiffusion", "HiDiffusion RAU-Net", "HiDiffusion MSW-MSA"), ["True", "False"])
    assert "SD1.x" in choices["HiDiffusion preset"] and "Hires pass" in choices["HiDiffusion passes"]


def paused_run(server, payload, at_call, route):
    """txt2img `payload`, paused at denoiser call `at_call`; POST `route` (interrupt or skip), let it go on."""
    server.probe("reset", pause_at_call=at_call)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(server.txt2img, **payload)
        deadline = time.monotonic() + 120
        while not server.probe("paused")["paused"]:
            assert time.monotonic() < deadline and not future.done(), "sampling never reached the pause"
            time.sleep(0.05)       # polling the probe's flag
        server.call(f"/sdapi/v1/{route}", {})
        server.probe("resume")
        return future.result(), server.probe("calls")
