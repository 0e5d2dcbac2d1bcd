"""The built-in Lora extension with HiDiffusion, in the real webui (tiny kohya LoRA on tiny SD1.5)."""
import pytest

from webui_host.scenario import hidiffusion, observed, request
from webui_host.server import decode, info

pytestmark = pytest.mark.webui

SETTINGS = hidiffusion(t1=0.5)


def generate(webui, lora=None, args=None, functional=False):
    prompt = request()["prompt"] + (f" <{lora}>" if lora else "")
    payload = request(prompt=prompt, override_settings={"lora_functional": functional})
    if args:
        payload["alwayson_scripts"] = args
    webui.probe("reset")
    response = webui.txt2img(**payload)
    return response, webui.probe("calls")


def test_a_lora_takes_effect_and_module_names_stay(webui):
    plain, vanilla_calls = generate(webui)
    alone, _ = generate(webui, args=SETTINGS)
    full, calls = generate(webui, "lora:tiny-lora:1", SETTINGS)
    half, _ = generate(webui, "lora:tiny-lora:0.5", SETTINGS)
    assert len({decode(alone), decode(full), decode(half)}) == 3
    assert [observed(c)["rad"] for c in calls] == [True] * 3 + [False] * 3
    assert {tuple(c["names"]) for c in calls} == {tuple(vanilla_calls[0]["names"])}   # while patched
    assert "tiny-lora" in info(full)["infotexts"][0]
    assert decode(generate(webui)[0]) == decode(plain)


def test_functional_mode_locon_on_the_strided_downsampler(webui):
    """In functional mode the LoCon's own conv (copied at load time with stride 2, padding 1) runs beside
    the downsampler and adds its output: it must follow RAD's stride 4 / padding 2 / dilation 2."""
    lora_only, _ = generate(webui, "lora:tiny-lora:1", functional=True)
    alone, _ = generate(webui, args=SETTINGS, functional=True)
    both, calls = generate(webui, "lora:tiny-lora:1", SETTINGS, functional=True)
    assert [observed(c)["rad"] for c in calls] == [True] * 3 + [False] * 3
    assert len({decode(lora_only), decode(alone), decode(both)}) == 3
    assert decode(generate(webui, "lora:tiny-lora:1", functional=True)[0]) == decode(lora_only)


def test_functional_mode_loha_on_the_downsampler_turns_raunet_off(webui):
    """A LoHa's functional output is a conv with the geometry it read at load time, beyond reach: RAU-Net
    is left off for the pass with a note, MSW-MSA still runs, and nothing fails."""
    loha_only, _ = generate(webui, "lora:tiny-loha:1", functional=True)
    both, calls = generate(webui, "lora:tiny-loha:1", SETTINGS, functional=True)
    assert not any(observed(c)["rad"] for c in calls) and all(observed(c)["windowed"] for c in calls)
    assert "RAU-Net off: a functional-mode NetworkModuleHada network on the strided downsampler" in \
        info(both)["extra_generation_params"]["HiDiffusion note"]
    assert decode(both) != decode(loha_only)
