import pytest
import torch
from torch import nn

from hidiffusion import UnsupportedModel, detect
from testbed.unets import build_unet


@pytest.mark.parametrize("model, family", [("sd15", "sd1"), ("sd21", "sd2"), ("sdxl", "sdxl")])
def test_families_are_told_apart_by_structure(tiny_unets, model, family):
    architecture = detect(tiny_unets[model])
    assert architecture.family == family
    assert architecture.layout == ("sdxl" if family == "sdxl" else "sd")
    assert not architecture.inpainting


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_inpainting_unets_are_recognised(model):
    unet = build_unet(model, tiny=True, in_channels=9)
    architecture = detect(unet)
    assert architecture.inpainting and architecture.in_channels == 9
    assert str(architecture).endswith("inpainting")


def test_full_size_sd15_is_recognised_on_the_meta_device():
    from testbed.unets import CONFIGS
    import ldm.modules.diffusionmodules.openaimodel as openaimodel
    with torch.device("meta"):
        unet = openaimodel.UNetModel(**CONFIGS["sd15"])
    assert detect(unet).family == "sd1"


def test_sdxl_refiner_is_refused_with_a_reason():
    # The refiner's layout: four levels like SD1.x but attention only on levels 1 and 2.
    refiner = build_unet("sdxl", tiny=True, channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1])
    with pytest.raises(UnsupportedModel, match="refiner"):
        detect(refiner)


def test_transformer_models_and_unknown_layouts_are_refused():
    with pytest.raises(UnsupportedModel, match="SD3"):
        detect(nn.Linear(4, 4))
    sd15 = build_unet("sd15", tiny=True, channel_mult=[1, 2, 4])     # one level short
    with pytest.raises(UnsupportedModel, match="unknown UNet layout"):
        detect(sd15)
