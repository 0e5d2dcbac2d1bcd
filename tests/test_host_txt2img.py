"""txt2img in the real webui 1.10.1 (tiny SD1.5): pixels, infotext and model state, never "no exception".

The probe extension records every UNet call, so each test also checks *where* RAU-Net and MSW-MSA ran:
RAD shows as a skip of a quarter instead of half the size, windows as four times the attention batch.
"""
import pytest

from webui_host.scenario import assert_clean, halved, hidiffusion, observed, request
from webui_host.server import decode, info

pytestmark = pytest.mark.webui


def generate(server, **payload):
    server.probe("reset")
    response = server.txt2img(**payload)
    return response, server.probe("calls")


def test_disabled_is_no_extension_enabled_differs_reproducibly_and_the_model_is_restored(webui, webui_without_extension):
    plain = decode(webui_without_extension.txt2img(**request()))
    before = assert_clean(webui)
    assert decode(webui.txt2img(**request())) == plain
    assert decode(webui.txt2img(**request(alwayson_scripts={"HiDiffusion": {"args": [False]}}))) == plain

    enabled, calls = generate(webui, **request(alwayson_scripts=hidiffusion()))
    assert decode(enabled) != plain
    assert decode(webui.txt2img(**request(alwayson_scripts=hidiffusion()))) == decode(enabled)
    assert [observed(c)["rad"] for c in calls] == [True, True, False, False, False, False]   # int(6 * 0.4) = 2
    assert all(observed(c)["windowed"] for c in calls) and not any(observed(c)["ca"] for c in calls)

    after, calls = generate(webui, **request())
    assert decode(after) == plain and not any(observed(c)["rad"] or observed(c)["windowed"] for c in calls)
    assert assert_clean(webui) == before                # same hooks, geometry, parameter names and state_dict keys

    params = info(enabled)["extra_generation_params"]
    assert {k: v for k, v in params.items() if k.startswith("HiDiffusion")} == {
        "HiDiffusion": "RAU-Net+MSW-MSA", "HiDiffusion auto": "preset T1 T2 aggressive",
        "HiDiffusion passes": "Both", "HiDiffusion native guard": False, "HiDiffusion preset": "SD1.x",
        "HiDiffusion T1": 0.4, "HiDiffusion T2": 0.0, "HiDiffusion aggressive": False}
    assert "HiDiffusion: RAU-Net+MSW-MSA" in info(enabled)["infotexts"][0]


HIRES = dict(enable_hr=True, hr_scale=2, denoising_strength=0.5, hr_second_pass_steps=4, steps=4)


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
@pytest.mark.parametrize("passes, first, hires", [("Both", True, True), ("First pass", True, False),
                                                  ("Hires pass", False, True)])
def test_hires_fix_apply_to(webui, webui_without_extension, upscaler, passes, first, hires):
    payload = request(hr_upscaler=upscaler, width=128, height=128, **HIRES)
    plain = decode(webui_without_extension.txt2img(**payload))
    response, calls = generate(webui, **payload, alwayson_scripts=hidiffusion(passes=passes))
    assert decode(response) != plain and decode(response)[0] == (256, 256)
    for call in calls:
        ran = observed(call)
        assert ran["windowed"] == (hires if call["hr"] else first), call
    assert [observed(c)["rad"] for c in calls if not c["hr"]] == [first, False, False, False]   # int(4 * 0.4) = 1
    assert [observed(c)["rad"] for c in calls if c["hr"]][:1] == [hires]
    assert info(response)["extra_generation_params"]["HiDiffusion passes"] == passes
    assert decode(webui.txt2img(**payload)) == plain
    assert_clean(webui)


def test_native_guard_skips_the_native_first_pass_and_runs_the_hires_pass(webui, webui_without_extension):
    payload = request(hr_upscaler="Latent", width=320, height=320, **HIRES)     # 320 -> 640 px
    plain = decode(webui_without_extension.txt2img(**payload))
    response, calls = generate(webui, **payload, alwayson_scripts=hidiffusion(native_guard=True))
    assert decode(response) != plain
    assert not any(observed(c)["windowed"] or observed(c)["rad"] for c in calls if not c["hr"])
    assert all(observed(c)["windowed"] for c in calls if c["hr"])
    params = info(response)["extra_generation_params"]
    assert params["HiDiffusion note"] == "first pass 320x320: not applied: 320x320 is not above the native 512 px"
    assert "HiDiffusion T1" in params                        # resolved for the hires pass that ran


def test_batch_images_are_reproducible_from_their_own_seeds(webui):
    """Image 2 of a batch made again as a single image from its seed: as close as vanilla gets."""
    batch = dict(batch_size=2, seed=10)

    def difference(args):
        extra = {} if args is None else dict(alwayson_scripts=args)
        both = webui.txt2img(**request(**batch, **extra))
        single = webui.txt2img(**request(seed=11, **extra))
        second, alone = decode(both, 1), decode(single)
        assert second[0] == alone[0]
        return max(abs(a - b) for a, b in zip(second[2], alone[2]))

    vanilla = difference(None)
    assert difference(hidiffusion(window_shift="random")) <= max(vanilla, 2)


def test_batch_count_two_uses_each_batch_seed(webui):
    response = webui.txt2img(**request(n_iter=2, seed=20, alwayson_scripts=hidiffusion()))
    single = webui.txt2img(**request(seed=21, alwayson_scripts=hidiffusion()))
    assert decode(response, 1) == decode(single)           # the second batch, alone, from its own seed
    assert info(response)["all_seeds"] == [20, 21]


def test_non_square_size(webui):
    """A non-square size: every call windowed, RAD's skip a quarter of the level-0 size on each axis."""
    response, calls = generate(webui, **request(width=320, height=192, alwayson_scripts=hidiffusion()))
    first = calls[0]
    assert first["x"][-2:] == [24, 40]
    assert first["skips"][3] == [halved(24, 2), halved(40, 2)] and calls[-1]["skips"][3] == [12, 20]
    assert all(observed(c)["windowed"] for c in calls) and first["mismatches"] == []
