"""A generation that does not end normally: interrupt, skip, an exception inside the UNet, training.

Each stops a run while RAU-Net is active (the probe pauses sampling at a known denoiser call, so no
test guesses a duration), then checks that the next plain run gives the plain pixels and that nothing
of HiDiffusion is left on the model: the kohya Deep Shrink and SD.Next failure, a model stuck patched
until a restart.
"""
import pytest

from webui_host.scenario import assert_clean, hidiffusion, observed, paused_run, request
from webui_host.server import decode

pytestmark = pytest.mark.webui

PAYLOAD = request(steps=6, alwayson_scripts=hidiffusion(t1=0.8))      # RAD for steps 0-3


def plain_again(webui, plain):
    """The next plain run gives the plain pixels, runs vanilla, and leaves the model clean."""
    webui.probe("reset")
    assert decode(webui.txt2img(**request(steps=6))) == plain
    assert not any(observed(c)["rad"] or observed(c)["windowed"] for c in webui.probe("calls"))
    assert_clean(webui)


@pytest.mark.parametrize("route", ["interrupt", "skip"])
def test_interrupt_and_skip_in_the_middle_of_raunet(webui, webui_without_extension, route):
    plain = decode(webui_without_extension.txt2img(**request(steps=6)))
    response, calls = paused_run(webui, PAYLOAD, 2, route)
    assert len(response["images"]) == 1
    assert [observed(c)["rad"] for c in calls] == [True, True, True]    # stopped after call 2, RAD still on
    plain_again(webui, plain)


def test_an_exception_inside_the_unet_leaves_nothing_behind(webui, webui_without_extension):
    plain = decode(webui_without_extension.txt2img(**request(steps=6)))
    webui.probe("reset", raise_at_call=2)
    with webui.expect_error("failure injected"):
        failed = webui.txt2img(**PAYLOAD)
    assert failed["status"] == 500 and "failure injected" in failed["errors"]
    assert observed(webui.probe("calls")[1])["rad"]          # it failed with RAU-Net active
    plain_again(webui, plain)


def test_a_crash_then_training_runs_on_the_vanilla_unet(webui, webui_without_extension):
    """Textual inversion training and its previews reach the UNet without scripts (no before_process, no
    postprocess): after a crashed run they must still get the vanilla UNet, not one stuck mid-RAU-Net."""
    webui.probe("reset", raise_at_call=1)
    with webui.expect_error("failure injected"):
        assert webui.txt2img(**PAYLOAD)["status"] == 500
    webui.probe("reset")
    webui.probe("train")
    calls = webui.probe("calls")
    assert len(calls) == 4 and calls[0]["denoiser_step"] is None      # the training forward, then 3 steps
    assert not any(observed(c)["rad"] or observed(c)["windowed"] for c in calls)
    plain_again(webui, decode(webui_without_extension.txt2img(**request(steps=6))))
