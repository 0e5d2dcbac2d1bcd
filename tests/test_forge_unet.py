"""The engine on WebUI Forge's own UNet class (`backend.nn.unet.IntegratedUNet2DConditionModel`) equals the
engine on the ldm/sgm UNet the A1111 webui runs, on the same weights: every phase, every shift, SD1.5, SD2.x
and SDXL shapes, square, non-square and odd latents, both RAU upsampling modes. Forge's class is built the
way Forge's loader builds it: its config detected from the state dict's shapes."""
import itertools

import pytest
import torch

from hidiffusion import RAU_UPSAMPLE_MODES, Phase, Settings, apply, detect, resolve
from testbed.unets import example_inputs, unet_config, webui_skip_concat

TOLERANCE = 1e-4        # fp32; the two classes are identical without the engine (checked below)
# Every combination of RAD and CA a pass can be in (the last only in the aggressive schedule).
PHASES = [Phase(rad=True, ca=True), Phase(rad=True, ca=False), Phase(rad=False, ca=False), Phase(rad=False, ca=True)]


def forge_twin(forge_backend, ldm_unet, model):
    unet_module, detection = forge_backend
    state = ldm_unet.state_dict()
    config = detection.detect_unet_config(state, "")
    heads = unet_config(model, tiny=True)      # Forge takes these from the matched model class
    config.update(num_heads=heads.get("num_heads", -1), num_head_channels=heads.get("num_head_channels", -1))
    if model == "sdxl":
        config["num_classes"] = "sequential"
    twin = unet_module.IntegratedUNet2DConditionModel.from_config(config)
    twin.load_state_dict(state, strict=True)
    return twin.eval()


@pytest.fixture(scope="module")
def twins(tiny_unets, forge_backend):
    return {model: forge_twin(forge_backend, unet, model) for model, unet in tiny_unets.items()}


def run(unet, x):
    with torch.no_grad():
        return unet(**x)


@pytest.mark.parametrize("rau_upsample", RAU_UPSAMPLE_MODES)
@pytest.mark.parametrize("latent", [(48, 48), (40, 64), (33, 47)], ids=["square", "non-square", "odd"])
def test_forge_unet_with_the_engine_equals_the_ldm_unet_with_the_engine(tiny_unets, twins, model, latent, rau_upsample):
    ldm, forge = tiny_unets[model], twins[model]
    assert type(forge).__name__ == "IntegratedUNet2DConditionModel"
    assert detect(forge) == detect(ldm)
    x = example_inputs(ldm, model, 2, *latent)
    with webui_skip_concat(model):      # the webui runs odd latents through its resizing torch.cat
        vanilla = run(ldm, x)
        forge_vanilla = run(forge, x)
        if latent[0] % 8 == latent[1] % 8 == 0:
            assert torch.equal(forge_vanilla, vanilla)
        # On an odd latent the hosts differ without us: A1111 upsamples x2 and then resizes to the skip at
        # `cat`, Forge upsamples straight to the skip's size. A patched UNet does the latter in both.
        settings = Settings(t1=0.6, t2=0.3, rau_upsample=rau_upsample)
        plans = [resolve(detect(unet), settings, latent[1] * 8, latent[0] * 8) for unet in (ldm, forge)]
        assert plans[0] == plans[1]
        patches = [apply(unet, plan, seed=7) for unet, plan in zip((ldm, forge), plans)]
        try:
            for phase, shift in itertools.product(PHASES, range(4)):
                for patch in patches:
                    patch.set_step(0, 10, shift)
                    patch.raunet.set_phase(phase)
                expected, got = run(ldm, x), run(forge, x)
                assert expected.shape == got.shape == vanilla.shape
                assert not torch.allclose(expected, vanilla, atol=1e-3), "the engine changed nothing"
                assert (got - expected).abs().max() <= TOLERANCE, (phase, shift)
        finally:
            for patch in patches:
                patch.remove()
        assert torch.equal(run(forge, x), forge_vanilla)


def control_argument(residuals):
    """A fresh `control` argument (Forge's UNet pops its lists): ControlNet's residuals for every skip in
    input-block order, the middle block's last."""
    return {"input": [], "middle": [residuals[-1]], "output": list(residuals[:-1])}


def test_controlnet_residuals_in_the_control_argument_land_on_features_of_their_size(twins, capfd):
    """Forge's `apply_control` drops a residual whose size differs ("control could not be applied"): in
    every phase each lands, resized over its area to the size of the very skip it is added to."""
    forge = twins["sd15"]
    x = example_inputs(forge, "sd15", 2, 40, 56)
    generator = torch.Generator().manual_seed(3)
    features = []           # the output of each input block and the middle block, in this call
    recorders = [block.register_forward_hook(lambda module, args, output: features.append(output))
                 for block in [*forge.input_blocks, forge.middle_block]]
    try:
        run(forge, x)
        residuals = [torch.randn(f.shape, generator=generator) for f in features]
        plain_with_control = run(forge, dict(x, control=control_argument(residuals)))
        plan = resolve(detect(forge), Settings(t1=0.6, t2=0.3), 56 * 8, 40 * 8)
        patch = apply(forge, plan, seed=7)
        for phase in PHASES:
            patch.set_step(0, 10)
            patch.raunet.set_phase(phase)
            features.clear()
            without = run(forge, x)
            sizes = [f.shape[-2:] for f in features]     # recorded after the patch's hooks: this phase's sizes
            assert (sizes != [f.shape[-2:] for f in residuals]) == (phase.rad or phase.ca)
            got = run(forge, dict(x, control=control_argument(residuals)))
            fitted = [torch.nn.functional.interpolate(r, size=s, mode="area") for r, s in zip(residuals, sizes)]
            expected = run(forge, dict(x, control=control_argument(fitted)))
            assert "control could not be applied" not in capfd.readouterr().out
            assert (got - expected).abs().max() <= TOLERANCE, phase     # float32 round-off of the same resize
            assert not torch.allclose(got, without, atol=1e-3) and not torch.allclose(got, plain_with_control, atol=1e-3)
        patch.remove()
    finally:
        for recorder in recorders:
            recorder.remove()
