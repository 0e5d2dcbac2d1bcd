"""Where WebUI Forge differs from the A1111 webui for this extension: where a loaded model keeps its UNet.

Everything else is one code path. Forge keeps A1111's scripts, processing hooks, `on_cfg_denoiser` (with
the same one-step lag), infotext, XYZ grid and API. Its UNet keeps the ldm block layout, so the engine
recognises and patches it by structure, and its ControlNet hands the residuals to the UNet as the `control`
argument, which the engine fits to RAU-Net's sizes. Forge rebuilds `forge_objects` (shallow copies and
clones) before every sampling pass, but all of them share the one UNet module, so a patch applied at a
pass's first denoiser call is on the module that samples; hooks survive the clones, so every way out of a
pass removes them (job.py).
"""


def unet_of(model):
    """The UNet module of a loaded model (an ldm/sgm `UNetModel`, or Forge's `IntegratedUNet2DConditionModel`);
    None while there is none (no model loaded, or one without a UNet)."""
    forge_objects = getattr(model, "forge_objects", None)
    if forge_objects is not None:
        return forge_objects.unet.model.diffusion_model
    return getattr(getattr(model, "model", None), "diffusion_model", None)
