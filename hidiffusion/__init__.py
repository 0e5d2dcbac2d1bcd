"""HiDiffusion (arXiv 2311.17528) for the UNets the AUTOMATIC1111 webui and WebUI Forge run.

RAU-Net (shrink the deep levels during the first steps, against duplicated objects at high
resolution) and MSW-MSA (shifted-window self-attention in the top blocks, for speed), training-free.
Host-free: torch, einops and omegaconf only.

    from hidiffusion import Settings, detect, resolve, apply

    plan = resolve(detect(unet), Settings(), width=1024, height=1024)
    print(plan.describe())
    patch = apply(unet, plan, seed=1234)
    for step in range(steps):
        patch.set_step(step, steps)     # before the UNet calls of this step
        ...                             # sample as usual
    patch.remove()                      # bit-identical to the unpatched UNet again
"""
from .architecture import Architecture, UnsupportedModel, detect
from .patch import Patch, apply, patched, remove, remove_all
from .schedule import PRESETS, RAU_UPSAMPLE_MODES, WINDOW_SHIFT_MODES, Phase, Plan, Settings, resolve

__all__ = [
    "Architecture", "UnsupportedModel", "detect",
    "Patch", "apply", "patched", "remove", "remove_all",
    "PRESETS", "RAU_UPSAMPLE_MODES", "WINDOW_SHIFT_MODES", "Phase", "Plan", "Settings", "resolve",
]
