"""Tiny random checkpoints WebUI Forge loads offline, built from Forge's own classes.

Run by the test Forge's interpreter (`python forge_checkpoints.py FORGE_DIR OUT_DIR`, in FORGE_DIR). Forge
recognises a model from its state dict's shapes (`huggingface_guess`): SD1.5 needs 320 channels and a
768-wide context, and its text encoder and VAE are built from the configs in Forge's tree, so they must be
full size (CLIP-L 123 M parameters, the VAE 84 M). The number of levels, their widths and the blocks per
level are read from the keys. So the smallest SD1.5 Forge accepts with the real SD1.x block layout (12
input blocks, Downsample at input blocks 3, 6, 9, attention on the three upper levels) keeps 320 channels
on every level instead of 320/640/1280/1280: a UNet of 111 M parameters instead of 860 M.

Keys are the original single-file layout (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.transformer.text_model.*`); no .yaml is needed. Weights are random and non-zero, as in
`checkpoints.py`, whose LoRA builder makes this model's LoRA too.
"""
import sys
from pathlib import Path

import torch

from checkpoints import build_lora, randomize, save

SD15_CONFIG = "backend/huggingface/runwayml/stable-diffusion-v1-5"
# SD1.5's UNet (v1-inference.yaml) with channel_mult 1,1,1,1, in Forge's arguments: transformer depth per
# input res block (levels 0-2 have attention), per output block (deepest level first, read from the end).
UNET = dict(in_channels=4, model_channels=320, out_channels=4, num_res_blocks=2, channel_mult=[1, 1, 1, 1],
            num_heads=8, use_spatial_transformer=True, context_dim=768, transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
            transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1)


def calibrate_decoder(vae, spread: float = 0.3) -> None:
    """Scale the VAE's last conv so a decoded latent spreads over the pixel range instead of clipping
    at black and white: clipped pixels would hide differences between two latents."""
    latent = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        vae.decoder.conv_out.bias.zero_()
        vae.decoder.conv_out.weight /= vae.decode(latent).std() / spread


def build(forge: Path, out: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    from backend.nn.cnets.cldm import ControlNet
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL

    unet = IntegratedUNet2DConditionModel(**UNET).eval()
    randomize(unet, 0)
    vae = IntegratedAutoencoderKL.from_config(IntegratedAutoencoderKL.load_config(forge / SD15_CONFIG / "vae")).eval()
    randomize(vae, 1)
    calibrate_decoder(vae)
    torch.manual_seed(2)        # the text encoder keeps its own (random, non-zero) initialisation
    clip = CLIPTextModel(CLIPTextConfig.from_pretrained(forge / SD15_CONFIG / "text_encoder"))
    tensors = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    tensors.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    tensors.update({f"cond_stage_model.transformer.{k}": v for k, v in clip.state_dict().items()})
    save(tensors, out / "Stable-diffusion" / "forge-sd15.safetensors")
    build_lora(unet, out)       # the A1111 tests' LoRA (and LoCon on the RAD conv): the same module names

    # A ControlNet of the same shape, as Forge builds one for this UNet (its config plus the hint channels).
    control = ControlNet(**{k: v for k, v in UNET.items() if k != "out_channels"}, hint_channels=3)
    randomize(control, 3)
    save(control.state_dict(), out / "ControlNet" / "forge-controlnet-sd15.safetensors")


if __name__ == "__main__":
    forge_dir, out_dir = (Path(arg).resolve() for arg in sys.argv[1:3])
    # backend.args parses the command line at import; without --always-cpu it asks CUDA for a device.
    sys.argv = sys.argv[:1] + ["--always-cpu"]
    sys.path[1:1] = [str(forge_dir), str(forge_dir / "packages_3rdparty"),
                     str(forge_dir / "repositories" / "huggingface_guess")]
    out_dir.mkdir(parents=True, exist_ok=True)
    build(forge_dir, out_dir)
