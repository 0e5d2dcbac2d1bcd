"""Where RAU-Net switches off, for every sampler family the webui has, in every kind of pass.

The reference is what the webui itself ran: a one-call-per-step sampler (Euler, or DDIM for the
timestep samplers) with the same schedule, recorded by the probe. The official rule is
`step < int(steps * T)`; with the noise level s_K of step K = int(steps * T) of that reference, every
sampler must run RAD (and CA, for T2) exactly on the calls made before any call at a level <= s_K.
One-call-per-step samplers must match the official rule call for call.
"""
import pytest

from webui_host.scenario import hidiffusion, phases, request

pytestmark = pytest.mark.webui

T1, T2 = 0.6, 0.3
SETTINGS = hidiffusion(t1=T1, t2=T2)

# sampler, scheduler, the one-call-per-step sampler giving its schedule, settings that shape that schedule
FAMILIES = [
    ("Euler a", "Automatic", None, {}),                               # ancestral
    ("DPM++ 2M", "Karras", None, {}),                                 # multistep
    ("Euler", "Exponential", None, {}),                               # a scheduler other than the default
    ("LCM", "Automatic", None, {}),
    ("DDIM", "Automatic", None, {}),                                  # timesteps: N-1 calls for N steps
    ("UniPC", "Automatic", "DDIM", {}),
    ("PLMS", "Automatic", "DDIM", {}),                                # two calls at its first step
    ("Heun", "Automatic", "Euler", {}),                               # second order
    ("DPM2", "Karras", "Euler", {"always_discard_next_to_last_sigma": True}),
    ("Restart", "Karras", "Euler", {}),                               # jumps back up the schedule
    ("DPM adaptive", "Automatic", "Euler", {}),                       # as many calls as its error control wants
]
PASSES = {
    "txt2img": dict(steps=10),
    "img2img": dict(steps=10, denoising_strength=0.6),
    "hires": dict(steps=3, width=128, height=128, enable_hr=True, hr_scale=2, hr_upscaler="Latent",
                  denoising_strength=0.6, hr_second_pass_steps=10),
}


@pytest.fixture(scope="module")
def init_image(webui):
    return webui.txt2img(**request(steps=3))["images"][0]


def run(webui, kind, init_image, sampler, scheduler, overrides, **extra):
    payload = request(sampler_name=sampler, scheduler=scheduler, override_settings=overrides, **PASSES[kind], **extra)
    webui.settle_rng()
    webui.probe("reset")
    if kind == "img2img":
        webui.call("/sdapi/v1/img2img", dict(payload, init_images=[init_image]))
    else:
        webui.txt2img(**payload)
    calls = webui.probe("calls")
    return [c for c in calls if c["hr"]] if kind == "hires" else calls


def switch_levels(levels):
    """The noise level at which each switch must be off: that of step int(steps * T) of the schedule."""
    return {name: levels[int(len(levels) * ratio)] for name, ratio in (("rad", T1), ("ca", T2))}


@pytest.mark.parametrize("kind", PASSES)
@pytest.mark.parametrize("sampler, scheduler, reference, overrides", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_raunet_switches_off_at_the_schedules_own_point(webui, init_image, kind, sampler, scheduler, reference, overrides):
    calls = phases(run(webui, kind, init_image, sampler, scheduler, overrides, alwayson_scripts=SETTINGS))
    assert calls, "the probe saw no UNet call"
    if reference is None:      # one call per step: the official rule, call for call
        steps = len(calls)
        assert [rad for _, rad, _ in calls] == [i < int(steps * T1) for i in range(steps)]
        assert [ca for _, _, ca in calls] == [i < int(steps * T2) for i in range(steps)]
        return
    schedule = [level for level, _, _ in phases(run(webui, kind, init_image, reference, scheduler, overrides))]
    off = switch_levels(schedule)
    for name, column in (("rad", 1), ("ca", 2)):
        expected = [all(level > off[name] for level, _, _ in calls[:i + 1]) for i in range(len(calls))]
        assert [c[column] for c in calls] == expected, (name, off[name], [c[0] for c in calls])
