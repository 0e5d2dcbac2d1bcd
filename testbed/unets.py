"""UNets of the real architectures with random weights, for the benchmark and the tests.

Built from the same classes the webui runs: ldm `UNetModel` (SD1.x/SD2.x) and sgm `UNetModel`
(SDXL). ldm and sgm are imported only when a builder is called; where the webui's `sgm` is not
importable, the copy vendored in imaginAIry is used. "tiny" twins keep every block and index of the
full model with fewer channels, so HiDiffusion takes exactly the same code paths.
"""
import contextlib
import copy
import importlib

import torch
import torch.nn.functional as F
from einops import rearrange

# Keyword arguments of the ldm/sgm UNetModel per architecture (the webui's v1/v2/sd_xl_base configs).
CONFIGS = {
    "sd15": dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                 num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
                 transformer_depth=1, context_dim=768, use_checkpoint=False, legacy=False),
    "sd21": dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                 num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_head_channels=64, use_spatial_transformer=True,
                 use_linear_in_transformer=True, transformer_depth=1, context_dim=1024, use_checkpoint=False,
                 legacy=False),
    "sdxl": dict(adm_in_channels=2816, num_classes="sequential", use_checkpoint=False, in_channels=4,
                 out_channels=4, model_channels=320, attention_resolutions=[4, 2], num_res_blocks=2,
                 channel_mult=[1, 2, 4], num_head_channels=64, use_linear_in_transformer=True,
                 transformer_depth=[1, 2, 10], context_dim=2048, spatial_transformer_attn_type="softmax"),
}
# The same layouts with narrow channels and shallow level-2 transformers.
TINY = {
    "sd15": dict(model_channels=32, context_dim=64, num_heads=4),
    "sd21": dict(model_channels=32, context_dim=64, num_head_channels=8),
    "sdxl": dict(model_channels=32, context_dim=64, adm_in_channels=96, num_head_channels=16,
                 transformer_depth=[1, 2, 3]),
}
NATIVE_LATENT = {"sd15": 64, "sd21": 64, "sdxl": 128}


def unet_config(model: str, tiny: bool = False, **overrides) -> dict:
    config = dict(CONFIGS[model])
    config.update(TINY[model] if tiny else {})
    config.update(overrides)
    return config


def _sgm_openaimodel():
    try:
        return importlib.import_module("sgm.modules.diffusionmodules.openaimodel")
    except ImportError:
        module = importlib.import_module("imaginairy.modules.sgm.diffusionmodules.openaimodel")
        # imaginAIry imports the ldm-style SpatialTransformer there; its sgm one sits beside it.
        module.SpatialTransformer = importlib.import_module("imaginairy.modules.sgm.attention").SpatialTransformer
        return module


def _openaimodel(model: str):
    return _sgm_openaimodel() if model == "sdxl" else importlib.import_module("ldm.modules.diffusionmodules.openaimodel")


def build_unet(model: str, tiny: bool = False, seed: int = 0, device=None, **overrides) -> torch.nn.Module:
    """An eval-mode UNetModel of `model` ("sd15", "sd21", "sdxl") with random non-zero weights.

    On `device="meta"` the weights stay unallocated (for counting FLOPs or loading weights in place).
    """
    config = unet_config(model, tiny, **overrides)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        unet = _openaimodel(model).UNetModel(**config).eval()
    return unet if str(device) == "meta" else randomize(unet, seed)


CHECKPOINT_PREFIX = "model.diffusion_model."


def checkpoint_config(path: str) -> tuple:
    """(model, overrides) of the UNet in a single-file .safetensors checkpoint (ldm/sgm key layout),
    read from the tensor shapes in its header: SDXL has `label_emb`, SD2.x linear `proj_in` layers."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as checkpoint:
        def shape(key):
            key = CHECKPOINT_PREFIX + key
            return checkpoint.get_slice(key).get_shape() if key in keys else None
        keys = set(checkpoint.keys())
        if shape("input_blocks.0.0.weight") is None:
            raise ValueError(f"{path} holds no UNet under '{CHECKPOINT_PREFIX}' (ldm/sgm single-file layout)")
        if shape("label_emb.0.0.weight") is not None:
            model = "sdxl"
        else:
            model = "sd21" if len(shape("input_blocks.1.1.proj_in.weight") or ()) == 2 else "sd15"
        channels, in_channels = shape("input_blocks.0.0.weight")[:2]
        transformer = "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
        overrides = dict(in_channels=in_channels, model_channels=channels, context_dim=shape(transformer)[1])
        if channels != CONFIGS[model]["model_channels"]:     # a tiny twin saved as a checkpoint
            overrides = {**TINY[model], **overrides}
        if model == "sdxl":
            overrides["adm_in_channels"] = shape("label_emb.0.0.weight")[1]
    return model, overrides


def load_unet(path: str) -> tuple:
    """(model, UNetModel) with the UNet weights of a single-file .safetensors checkpoint, on the CPU."""
    from safetensors.torch import load_file
    model, overrides = checkpoint_config(path)
    unet = build_unet(model, device="meta", **overrides)
    state = {key[len(CHECKPOINT_PREFIX):]: value for key, value in load_file(path).items()
             if key.startswith(CHECKPOINT_PREFIX)}
    unet.load_state_dict(state, strict=True, assign=True)
    return model, unet.float()


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-initialise every parameter: ldm/sgm zero-initialise output layers, so a fresh UNet outputs 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() == 1 and ("norm" in name or name.endswith(("in_layers.0.weight", "out_layers.0.weight"))
                                         or name.startswith("out.0")):
                parameter.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            else:
                fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
                parameter.copy_(noise * fan_in ** -0.5)
    return model


def example_inputs(unet: torch.nn.Module, model: str, batch: int, height: int, width: int, seed: int = 0,
                   dtype=torch.float32, device="cpu") -> dict:
    """Keyword inputs of one UNet call at a latent of `height` x `width`."""
    generator = torch.Generator().manual_seed(seed)
    context_dim = unet.input_blocks[4][1].transformer_blocks[0].attn2.to_k.in_features
    inputs = dict(x=torch.randn(batch, unet.input_blocks[0][0].in_channels, height, width, generator=generator),
                  timesteps=torch.linspace(999, 1, batch).round(),
                  context=torch.randn(batch, 77, context_dim, generator=generator))
    if model == "sdxl":
        inputs["y"] = torch.randn(batch, unet.label_emb[0][0].in_features, generator=generator)
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def _sdp_forward(self, x, context=None, mask=None, **kwargs):
    heads = self.heads
    context = x if context is None else context
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
    out = F.scaled_dot_product_attention(q, k, v)
    return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


@contextlib.contextmanager
def sdp_attention():
    """Swap ldm's einsum CrossAttention.forward for scaled-dot-product attention, as the webui's
    "sdp" optimisation does (a class attribute, so HiDiffusion must go through it)."""
    attention = importlib.import_module("ldm.modules.attention").CrossAttention
    original = attention.forward
    attention.forward = _sdp_forward
    try:
        yield
    finally:
        attention.forward = original


class _ResizingTorch:
    """`torch` as the UNet module sees it under the webui (its sd_hijack_unet): `cat` first resizes the
    upsampled features to their skip's size (nearest), since a latent side that is not a multiple of 8
    leaves the skips one row off."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def cat(tensors, dim=0, **kwargs):
        if len(tensors) == 2 and tensors[0].shape[-2:] != tensors[1].shape[-2:]:
            tensors = (F.interpolate(tensors[0], size=tensors[1].shape[-2:], mode="nearest"), tensors[1])
        return torch.cat(tensors, dim, **kwargs)


@contextlib.contextmanager
def webui_skip_concat(model: str):
    """Run `model`'s UNet class with the webui's resizing skip concatenation, so that the unpatched UNet
    takes odd sizes like 1920x1080 (latent 240x135) as it does in the webui."""
    module = _openaimodel(model)
    original = module.th
    module.th = _ResizingTorch()
    try:
        yield
    finally:
        module.th = original


def sharing_weights(unet: torch.nn.Module) -> torch.nn.Module:
    """Another UNet object over the very weight tensors of `unet` (no copy), to patch independently."""
    return copy.deepcopy(unet, memo={id(tensor): tensor for tensor in unet.state_dict(keep_vars=True).values()})
