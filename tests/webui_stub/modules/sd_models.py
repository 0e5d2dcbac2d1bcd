"""A checkpoint as the samplers see it: `sd_model.model.diffusion_model` is the real (tiny) ldm/sgm UNet."""
import types

import torch


class StableDiffusionModel:
    SIGMA_MAX = 14.6

    def __init__(self, unet, is_sdxl=False, name="model"):
        self.model = types.SimpleNamespace(diffusion_model=unet, conditioning_key="crossattn")
        self.is_sdxl = is_sdxl
        self.name = name
        generator = torch.Generator().manual_seed(7)
        context_dim = unet.input_blocks[4][1].transformer_blocks[0].attn2.to_k.in_features
        self.cond = torch.randn(1, 8, context_dim, generator=generator)
        self.uncond = torch.randn(1, 8, context_dim, generator=generator)
        self.vector = (torch.randn(1, unet.label_emb[0][0].in_features, generator=generator)
                       if is_sdxl else None)

    def apply_model(self, x, sigma, context):
        """eps-prediction k-diffusion wrapper: denoised = x - sigma * eps(x * c_in, t)."""
        unet = self.model.diffusion_model
        c_in = (sigma ** 2 + 1) ** -0.5
        t = (sigma / self.SIGMA_MAX * 999).clamp(0, 999)
        h = x * c_in[:, None, None, None]
        if unet.input_blocks[0][0].in_channels == 9:        # inpainting: masked image + mask (image_cond)
            h = torch.cat([h, torch.zeros(h.shape[0], 5, *h.shape[2:])], 1)
        kwargs = {"context": context}
        if self.vector is not None:
            kwargs["y"] = self.vector.expand(x.shape[0], -1)
        with torch.no_grad():
            eps = unet(h, t, **kwargs)
        return x - sigma[:, None, None, None] * eps
