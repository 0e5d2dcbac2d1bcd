"""Other extensions whose work meets RAU-Net's smaller features or MSW-MSA's windows: ControlNet (its
residuals, T2I-Adapter features, ControlNet-LLLite) and the built-in Lora extension's functional mode."""
import sys

from torch import nn

from modules import shared

# The input blocks after which sd-webui-controlnet adds a T2I-Adapter's features to the hidden state
# (SDXL's last one after the middle block, index 9).
T2I_ADAPTER_BLOCKS = {"sd": (2, 5, 8, 11), "sdxl": (3, 5, 8, 9)}


def controlnet_units(p, unet):
    """The units sd-webui-controlnet hooked into this UNet for this generation (its ControlParams)."""
    if getattr(unet, "_original_forward", None) is None:        # what its hook leaves while it is active
        return []
    script = next((s for s in getattr(p.scripts, "alwayson_scripts", ()) if s.title() == "ControlNet"), None)
    return list(getattr(getattr(script, "latest_network", None), "control_params", None) or [])


def functional_lora(conv):
    """The Lora extension's modules that add their own output to `conv`'s (its "functional" mode)."""
    networks = sys.modules.get("networks")      # the built-in Lora extension, when loaded
    name = getattr(conv, "network_layer_name", None)
    if networks is None or name is None or not shared.opts.data.get("lora_functional", False):
        return []
    return [network.modules[name] for network in networks.loaded_networks if name in network.modules]


def raunet_conflict(unet, plan):
    """Why RAU-Net cannot run with what another extension added, or None."""
    if plan.rad_input_block is not None:
        others = [type(m).__name__ for m in functional_lora(unet.input_blocks[plan.rad_input_block][0].op)
                  if not isinstance(getattr(m, "down_model", None), nn.Conv2d)]
        if others:      # its conv geometry sits in kwargs it copied at load time, out of reach
            return f"a functional-mode {others[0]} network on the strided downsampler"
    return None


def fit_extensions(patch, control, unet, plan):
    """Make other extensions' additions follow the patch; return the ControlNet-LLLite modules, whose
    cached conditioning must be recomputed whenever the phase changes the features' sizes."""
    lllite = []
    for param in control:
        kind = param.control_model_type
        if getattr(kind, "is_controlnet", False):
            patch.raunet.follow_residuals(param.control_model)
        if kind.name == "T2I_Adapter":
            patch.raunet.follow_residuals(param.control_model, T2I_ADAPTER_BLOCKS[plan.architecture.layout])
        if kind.name == "Controlllite":
            lllite += list(param.control_model.modules.values())
    if plan.settings.raunet and plan.rad_input_block is not None:
        for module in functional_lora(unet.input_blocks[plan.rad_input_block][0].op):
            patch.raunet.add_rad_twin(module.down_model)     # raunet_conflict let only LoRA/LoCon through
    if patch.window_attention is not None and lllite:
        reason = "ControlNet-LLLite conditions its projections on the whole grid"
        for name, attn in unet.named_modules():
            if name.endswith("attn1") and any(getattr(getattr(attn, f"to_{x}"), "lllite_list", None) for x in "qkv"):
                patch.window_attention.keep_global(attn, reason)
    return lllite
