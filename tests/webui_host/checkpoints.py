"""Tiny random checkpoints the real webui loads offline, each with the narrowed `.yaml` beside it.

Run by the test webui's own interpreter (`python checkpoints.py WEBUI_DIR CONTROLNET_DIR OUT_DIR`): every model is
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
# The real SD1.5 widths, for sd-webui-controlnet: its ControlNet config is fixed at 320 channels.
SD1_WIDE = {**SD1, "unet_config.params": {"model_channels": 320, "num_heads": 8, "context_dim": TINY_CLIP_WIDTH}}
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
    "tiny-sd15-wide": ("configs/v1-inference.yaml", SD1_WIDE),
    "tiny-sd15-wide-inpainting": ("configs/v1-inpainting-inference.yaml", SD1_WIDE),
    "tiny-sd21-v": ("repositories/stable-diffusion-stability-ai/configs/stable-diffusion/v2-inference-v.yaml", SD2),
    "tiny-sdxl": ("repositories/generative-models/configs/inference/sd_xl_base.yaml", SDXL),
    "tiny-sdxl-inpainting": ("configs/sd_xl_inpaint.yaml", SDXL),
    "tiny-sdxl-refiner": ("repositories/generative-models/configs/inference/sd_xl_refiner.yaml", SDXL_REFINER),
}
REPOSITORIES = ("stable-diffusion-stability-ai", "generative-models", "k-diffusion")

# sd-webui-controlnet 1.1.455 builds every SD1.x ControlNet with this configuration (controlnet_model_guess.py);
# only the context width and hint channels come from the file.
CONTROLNET_SD15 = dict(in_channels=4, model_channels=320, hint_channels=3, num_res_blocks=2,
                       attention_resolutions=[1, 2, 4], transformer_depth=[1, 1, 1, 0], channel_mult=[1, 2, 4, 4],
                       transformer_depth_middle=1, use_linear_in_transformer=False, context_dim=TINY_CLIP_WIDTH,
                       num_heads=8, global_average_pooling=False, adm_in_channels=None, use_fp16=False)
LORA_RANK = 4
LLLITE = dict(cond_emb_dim=32, mlp_dim=16)
# The SDXL attention projections the tiny LLLite conditions: windowed level-1 blocks and a level-2 block.
LLLITE_PROJECTIONS = [f"{blocks}.{index}.1.transformer_blocks.0.{attn}.{proj}"
                      for blocks, index in (("input_blocks", 4), ("input_blocks", 5), ("input_blocks", 7),
                                            ("output_blocks", 3), ("output_blocks", 4))
                      for attn, proj in (("attn1", "to_q"), ("attn1", "to_k"), ("attn1", "to_v"), ("attn2", "to_q"))]


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


def load_module(path: Path):
    """A module of sd-webui-controlnet by file: its package name clashes with the webui's `scripts`."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"controlnet_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save(tensors: dict, path: Path, dtype=torch.float16) -> None:
    """fp16 as checkpoints are published; the Lora networks stay fp32, since the webui's functional
    mode applies a LoHa's stored weights to fp32 inputs as they are (a dtype error with fp16 here)."""
    from safetensors.torch import save_file
    path.parent.mkdir(exist_ok=True)
    save_file({k: v.detach().to(dtype).contiguous() for k, v in tensors.items()}, path)
    print(f"{path.name}: {sum(v.numel() for v in tensors.values()) / 1e6:.1f} M values")


def diffusers_lora_name(compvis: str) -> str:
    """A kohya LoRA key in the diffusers naming most SD1.x LoRAs use, for a compvis module name."""
    parts = compvis.split(".")
    if parts[0] == "middle_block":
        prefix, rest = "mid_block_attentions_0", parts[2:]
    else:
        index = int(parts[1])
        level, position = divmod(index - 1, 3) if parts[0] == "input_blocks" else divmod(index, 3)
        kind = "down" if parts[0] == "input_blocks" else "up"
        prefix, rest = f"{kind}_blocks_{level}_attentions_{position}", parts[3:]
    return "lora_unet_" + "_".join([prefix] + rest)


def build_lora(unet: torch.nn.Module, out: Path) -> None:
    """A LoRA on every attention projection of a tiny SD1.5 and a LoCon on the Downsample conv that RAD
    changes (`lora_unet_down_blocks_0_downsamplers_0_conv`), in the key format the Lora extension loads;
    and a LoHa on that conv alone."""
    generator = torch.Generator().manual_seed(7)
    tensors = {}

    def add(key, weight):
        down_shape = (LORA_RANK, *weight.shape[1:])
        up_shape = (weight.shape[0], LORA_RANK) + (1,) * (weight.dim() - 2)
        tensors[f"{key}.lora_down.weight"] = torch.randn(down_shape, generator=generator) * weight[0].numel() ** -0.5
        tensors[f"{key}.lora_up.weight"] = torch.randn(up_shape, generator=generator) * LORA_RANK ** -0.5
        tensors[f"{key}.alpha"] = torch.tensor(float(LORA_RANK))

    for name, module in unet.named_modules():
        if name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")) and ".1.transformer_blocks." in name:
            add(diffusers_lora_name(name), module.weight)
    add("lora_unet_down_blocks_0_downsamplers_0_conv", unet.input_blocks[3][0].op.weight)
    save(tensors, out / "Lora" / "tiny-lora.safetensors", torch.float32)

    # A LoHa on the same conv: another network type, whose functional mode keeps the conv's geometry in kwargs
    weight, key = unet.input_blocks[3][0].op.weight, "lora_unet_down_blocks_0_downsamplers_0_conv"
    loha = {f"{key}.hada_w{i}_a": torch.randn(weight.shape[0], LORA_RANK, generator=generator) * 0.5 for i in (1, 2)}
    loha.update({f"{key}.hada_w{i}_b": torch.randn(LORA_RANK, weight[0].numel(), generator=generator) * 0.5
                 for i in (1, 2)})
    save(dict(loha, **{f"{key}.alpha": torch.tensor(float(LORA_RANK))}), out / "Lora" / "tiny-loha.safetensors",
         torch.float32)


def build_controlnet(controlnet: Path, out: Path) -> None:
    """An SD1.5 ControlNet built by sd-webui-controlnet's own class, random and non-zero (its zero
    convolutions too, or the control would add nothing)."""
    network = load_module(controlnet / "scripts" / "cldm.py").ControlNet(**CONTROLNET_SD15)
    randomize(network, 11)
    save(network.state_dict(), out / "ControlNet" / "tiny-controlnet-sd15.safetensors")


def build_t2i_adapter(controlnet: Path, out: Path) -> None:
    """A T2I-Adapter for the tiny SD1.5 (its widths 32/64/128/128), built by sd-webui-controlnet's Adapter."""
    adapter = load_module(controlnet / "scripts" / "adapter.py").Adapter(
        channels=[32, 64, 128, 128], nums_rb=2, cin=3 * 8 * 8, ksize=1, sk=True, use_conv=False, is_sdxl=False)
    randomize(adapter, 13)
    save(adapter.state_dict(), out / "ControlNet" / "tiny-t2iadapter-sd15.safetensors")


def build_lllite(unet: torch.nn.Module, controlnet: Path, out: Path) -> None:
    """A kohya ControlNet-LLLite for the tiny SDXL, built from sd-webui-controlnet's LLLiteModule."""
    lllite = load_module(controlnet / "scripts" / "controlnet_lllite.py")
    tensors = {}
    for path in LLLITE_PROJECTIONS:
        projection = unet.get_submodule(path)
        depth = 2 if path.startswith(("input_blocks.4", "input_blocks.5", "output_blocks")) else 3  # image/16, /32
        name = "lllite_unet_" + path.replace(".", "_")
        module = lllite.LLLiteModule(name, False, projection.in_features, depth, **LLLITE)
        randomize(module, len(tensors))
        tensors.update({f"{name}.{key}": value for key, value in module.state_dict().items()})
    save(tensors, out / "ControlNet" / "tiny-lllite-sdxl.safetensors")


def build(webui: Path, controlnet: Path, out: Path) -> None:
    from omegaconf import OmegaConf
    from sgm.util import instantiate_from_config

    clip_l = out / CLIP_L
    write_clip_l(clip_l)
    register_open_clip()
    for seed, (name, (config_path, overrides)) in enumerate(MODELS.items()):
        config = narrowed_config(webui, config_path, overrides, clip_l)
        model = instantiate_from_config(config.model).eval()
        randomize(model, seed)
        calibrate_decoder(model)
        save(model.state_dict(), out / "Stable-diffusion" / f"{name}.safetensors")
        (out / "Stable-diffusion" / f"{name}.yaml").write_text(OmegaConf.to_yaml(config))
        if name == "tiny-sd15":
            build_lora(model.model.diffusion_model, out)
        if name == "tiny-sdxl":
            build_lllite(model.model.diffusion_model, controlnet, out)
        del model
    build_controlnet(controlnet, out)
    build_t2i_adapter(controlnet, out)


if __name__ == "__main__":
    webui_dir, controlnet_dir, out_dir = (Path(arg).resolve() for arg in sys.argv[1:4])
    sys.argv = sys.argv[:1]         # the webui modules cldm.py imports parse the command line
    # cldm.py imports `scripts.controlnet_core`: sd-webui-controlnet's scripts folder, beside the webui's
    sys.path[:0] = [str(webui_dir)] + [str(webui_dir / "repositories" / r) for r in REPOSITORIES] + [str(controlnet_dir)]
    out_dir.mkdir(parents=True, exist_ok=True)
    build(webui_dir, controlnet_dir, out_dir)
