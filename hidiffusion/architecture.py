"""Which UNet is this? Recognised from the module structure alone, never from a model name.

The A1111 webui runs the ldm `UNetModel` for SD1.x/SD2.x and the sgm `UNetModel` for SDXL, Forge its own
`IntegratedUNet2DConditionModel` (Forge Classic and reForge ComfyUI's `UNetModel`), all with the same block
layout and class names; fine-tunes, 768-v, inpainting (9 input channels) and Turbo/Lightning variants
share their layouts. Anything else (the SDXL refiner, SD3's MMDiT, unknown layouts) is refused with the
reason.
"""
from dataclasses import dataclass

from torch import nn


class UnsupportedModel(ValueError):
    """The UNet's structure is not one HiDiffusion knows how to patch."""


@dataclass(frozen=True)
class Architecture:
    family: str          # "sd1", "sd2" or "sdxl": the preset "auto" resolves to
    layout: str          # key into presets.yaml `layouts`
    in_channels: int     # 4, or 9 for inpainting UNets

    @property
    def inpainting(self) -> bool:
        return self.in_channels == 9

    def __str__(self):
        return self.family.upper() + (" inpainting" if self.inpainting else "")


def _kind(module: nn.Module) -> str:
    return type(module).__name__


def _signature(blocks) -> str:
    """One letter per block: D(ownsample), U(psample-ending), A(ttention), R(es only), C(onv in)."""
    letters = []
    for block in blocks:
        kinds = [_kind(m) for m in block]
        if "Downsample" in kinds:
            letters.append("D")
        elif kinds[-1] == "Upsample":
            letters.append("U")
        elif "SpatialTransformer" in kinds:
            letters.append("A")
        elif "ResBlock" in kinds:
            letters.append("R")
        else:
            letters.append("C")
    return "".join(letters)


# The block signatures of the layouts HiDiffusion supports (see presets.yaml for their indices).
_SD_INPUT = "CAADAADAADRR"
_SD_OUTPUT = "RRUAAUAAUAAA"
_SDXL_INPUT = "CRRDAADAA"
_SDXL_OUTPUT = "AAUAAURRR"
_REFINER_INPUT = "CRRDAADAADRR"


def detect(unet: nn.Module) -> Architecture:
    """Return the Architecture of a UNet of the ldm block layout, or raise UnsupportedModel saying why."""
    if not all(hasattr(unet, name) for name in ("input_blocks", "middle_block", "output_blocks")):
        raise UnsupportedModel(
            f"{_kind(unet)} has no input_blocks/middle_block/output_blocks: not an SD1.x/SD2.x/SDXL UNet "
            "(SD3 and other transformer models are not supported)")
    inputs, outputs = _signature(unet.input_blocks), _signature(unet.output_blocks)
    if inputs == _SD_INPUT and outputs == _SD_OUTPUT:
        transformer = unet.input_blocks[1][1]
        family = "sd2" if isinstance(transformer.proj_in, nn.Linear) else "sd1"
        layout = "sd"
    elif inputs == _SDXL_INPUT and outputs == _SDXL_OUTPUT:
        family = layout = "sdxl"
    elif inputs == _REFINER_INPUT:
        raise UnsupportedModel("this is an SDXL refiner UNet (attention only on the inner levels); "
                               "HiDiffusion supports SDXL base-shaped models only")
    else:
        raise UnsupportedModel(f"unknown UNet layout (input blocks {inputs}, output blocks {outputs})")
    downsample = unet.input_blocks[3][0]
    if not isinstance(getattr(downsample, "op", None), nn.Conv2d):
        raise UnsupportedModel("the UNet downsamples without a convolution; RAU-Net needs one")
    return Architecture(family=family, layout=layout, in_channels=unet.input_blocks[0][0].in_channels)
