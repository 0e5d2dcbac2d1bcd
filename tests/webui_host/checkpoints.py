"""Tiny random checkpoints the real webui loads offline, each with the narrowed `.yaml` beside it.

Run by the test webui's own interpreter (`python checkpoints.py WEBUI_DIR OUT_DIR`): every model is
built from the webui's own config file through ldm/sgm's `instantiate_from_config`, with the widths
narrowed and everything else untouched, so the checkpoint keys are exactly the ones the webui expects
and the block layout (what HiDiffusion recognises) is the real one. Weights are random and non-zero
(ldm/sgm zero-initialise output layers; a fresh model would draw flat images).

Text encoders: a tiny CLIP-L folder (config, weights, a tokenizer generated from open_clip's bundled BPE)
named in the yamls, and a tiny open_clip architecture written beside open_clip's own model configs in
this venv, so SD2.x and SDXL build their OpenCLIP encoders with `pretrained=None` and nothing is
downloaded.
"""
import gzip
import json
import sys
from pathlib import Path

import torch

TINY_CLIP_WIDTH = 32                 # CLIP-L stand-in (SD1.x, SDXL's first encoder)
TINY_OPEN_CLIP = "hidiffusion-tiny"  # OpenCLIP stand-in (SD2.x, SDXL's second encoder), see OPEN_CLIP_CONFIG
TINY_OPEN_CLIP_WIDTH = 32
TIME_EMBEDDING = 8                   # SDXL's size/crop/aesthetic embeddings (256 in the real model)
CLIP_L = "tiny-clip-l"               # folder beside the checkpoints; replaces the hub id in the yamls

OPEN_CLIP_CONFIG = {"embed_dim": TINY_OPEN_CLIP_WIDTH,
                    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": TINY_OPEN_CLIP_WIDTH,
                                 "heads": 4, "layers": 2}}
CLIP_L_CONFIG = dict(vocab_size=49408, hidden_size=TINY_CLIP_WIDTH, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                     pad_token_id=1)

VAE = {"first_stage_config.params.ddconfig": {"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1}}
SD1 = {**VAE, "use_ema": False, "unet_config.params": {"model_channels": 32, "num_heads": 4, "context_dim": TINY_CLIP_WIDTH},
       "cond_stage_config.params": {"version": CLIP_L}}
SD2 = {**VAE, "unet_config.params": {"model_channels": 32, "num_head_channels": 8, "context_dim": TINY_OPEN_CLIP_WIDTH},
       "cond_stage_config.params": {"arch": TINY_OPEN_CLIP, "version": None}}
SDXL_UNET = {"model_channels": 32, "num_head_channels": 16}
# sgm's VAE asks for xformers attention, which raises outside the webui without xformers.
SGM_VAE = {"first_stage_config.params.ddconfig": dict(VAE["first_stage_config.params.ddconfig"], attn_type="vanilla")}
SDXL = {**SGM_VAE, "network_config.params": dict(SDXL_UNET, transformer_depth=[1, 2, 2],
                                             context_dim=TINY_CLIP_WIDTH + TINY_OPEN_CLIP_WIDTH,
                                             adm_in_channels=TINY_OPEN_CLIP_WIDTH + 6 * TIME_EMBEDDING),
        "conditioner_config.params.emb_models.0.params": {"version": CLIP_L, "layer_idx": 1},
        "conditioner_config.params.emb_models.1.params": {"arch": TINY_OPEN_CLIP, "version": None},
        **{f"conditioner_config.params.emb_models.{i}.params.outdim": TIME_EMBEDDING for i in (2, 3, 4)}}
SDXL_REFINER = {**SGM_VAE, "network_config.params": dict(SDXL_UNET, transformer_depth=1, context_dim=TINY_OPEN_CLIP_WIDTH,
                                                     adm_in_channels=TINY_OPEN_CLIP_WIDTH + 5 * TIME_EMBEDDING),
                "conditioner_config.params.emb_models.0.params": {"arch": TINY_OPEN_CLIP, "version": None},
                **{f"conditioner_config.params.emb_models.{i}.params.outdim": TIME_EMBEDDING for i in (1, 2, 3)}}

# checkpoint name -> (the webui's config it narrows, {key under model.params: value})
MODELS = {
    "tiny-sd15": ("configs/v1-inference.yaml", SD1),
    "tiny-sd15-inpainting": ("configs/v1-inpainting-inference.yaml", SD1),
    "tiny-sd21-v": ("repositories/stable-diffusion-stability-ai/configs/stable-diffusion/v2-inference-v.yaml", SD2),
    "tiny-sdxl": ("repositories/generative-models/configs/inference/sd_xl_base.yaml", SDXL),
    "tiny-sdxl-inpainting": ("configs/sd_xl_inpaint.yaml", SDXL),
    "tiny-sdxl-refiner": ("repositories/generative-models/configs/inference/sd_xl_refiner.yaml", SDXL_REFINER),
}
REPOSITORIES = ("stable-diffusion-stability-ai", "generative-models", "k-diffusion")


def write_clip_l(folder: Path) -> None:
    """A tiny CLIP-L in the Hugging Face layout, its tokenizer files made from open_clip's bundled BPE
    (the same 49 408-token vocabulary as openai/clip-vit-large-patch14)."""
    import open_clip
    from transformers import CLIPTextConfig, CLIPTextModel
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Path(open_clip.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(**CLIP_L_CONFIG)).save_pretrained(folder)


def narrowed_config(webui: Path, config_path: str, overrides: dict, clip_l: Path):
    from omegaconf import OmegaConf
    config = OmegaConf.load(webui / config_path)
    for key, value in overrides.items():
        if isinstance(value, dict):
            value = {k: str(clip_l) if v == CLIP_L else v for k, v in value.items()}
        OmegaConf.update(config, f"model.params.{key}", value, merge=True)
    return config


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random and non-zero: norms near 1, the rest scaled by fan-in."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() == 1 and "norm" in name and name.endswith("weight"):
                parameter.copy_(1.0 + 0.1 * noise)
            else:
                fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
                parameter.copy_(noise * fan_in ** -0.5)


def calibrate_decoder(model: torch.nn.Module, spread: float = 0.3) -> None:
    """Scale the VAE's last conv so a decoded latent spreads over the pixel range instead of clipping
    at black and white: clipped pixels would hide differences between two latents."""
    decoder = model.first_stage_model.decoder
    latent = torch.randn(1, decoder.z_shape[1], 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoder.conv_out.bias.zero_()
        decoder.conv_out.weight /= model.decode_first_stage(latent).std() / spread


def register_open_clip() -> None:
    """The tiny OpenCLIP architecture as a model config beside open_clip's own, so that every process
    of this venv (the webui, with or without extensions) knows it by name."""
    import open_clip
    path = Path(open_clip.__file__).with_name("model_configs") / f"{TINY_OPEN_CLIP}.json"
    path.write_text(json.dumps(OPEN_CLIP_CONFIG))
    open_clip.add_model_config(path)


def build(webui: Path, out: Path) -> None:
    from omegaconf import OmegaConf
    from safetensors.torch import save_file
    from sgm.util import instantiate_from_config

    clip_l = out / CLIP_L
    write_clip_l(clip_l)
    register_open_clip()
    checkpoints = out / "Stable-diffusion"
    checkpoints.mkdir()
    for seed, (name, (config_path, overrides)) in enumerate(MODELS.items()):
        config = narrowed_config(webui, config_path, overrides, clip_l)
        model = instantiate_from_config(config.model).eval()
        randomize(model, seed)
        calibrate_decoder(model)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, checkpoints / f"{name}.safetensors")
        (checkpoints / f"{name}.yaml").write_text(OmegaConf.to_yaml(config))
        print(f"{name}: {sum(v.numel() for v in state.values()) / 1e6:.1f} M values")


if __name__ == "__main__":
    webui_dir, out_dir = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    sys.path[:0] = [str(webui_dir)] + [str(webui_dir / "repositories" / r) for r in REPOSITORIES]
    out_dir.mkdir(parents=True, exist_ok=True)
    build(webui_dir, out_dir)
