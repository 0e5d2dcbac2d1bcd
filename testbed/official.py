"""The official HiDiffusion (PyPI `hidiffusion` 0.1.10, diffusers-only) run on twins of our UNets.

Used as the reference in the oracle tests and as the baseline in the benchmark. The official package
shares our top-level name `hidiffusion`, so it is installed outside site-packages (in
`<sys.prefix>/oracle`, or wherever `HIDIFFUSION_OFFICIAL_DIR` points) and loaded under the name
`official_hidiffusion`. An ldm/sgm UNet is converted to a diffusers `UNet2DConditionModel` with the
same weights by diffusers' own single-file converter; the official patch is then applied to it.

    twin = to_diffusers(unet, unet_config("sd15", tiny=True))
    apply(twin, "sd15")
    for step in range(total):
        set_step(twin, step, total)     # like Patch.set_step: the official per-module counters
        with pinned_shift(2):            # the official MSW-MSA draws its shift from torch.rand(1)
            out = run(twin, inputs)     # inputs as from testbed.unets.example_inputs
    remove(twin)

diffusers is imported only inside these functions, so the tests and the bench import this module without it.
"""
import contextlib
import importlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from unittest import mock

import torch

MODULE_NAME = "official_hidiffusion"
# The model ids the official code recognises; each selects its rule set (SD2.1 uses the SD1.5 rules).
OFFICIAL_IDS = {
    "sd15": "runwayml/stable-diffusion-v1-5",
    "sd21": "stabilityai/stable-diffusion-2-1-base",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}


def official_dir() -> Path:
    """The directory that holds the official package folder `hidiffusion/`."""
    return Path(os.environ.get("HIDIFFUSION_OFFICIAL_DIR") or Path(sys.prefix) / "oracle")


def load():
    """Import the official `hidiffusion.hidiffusion` module as `official_hidiffusion.hidiffusion`."""
    name = MODULE_NAME + ".hidiffusion"
    if name in sys.modules:
        return sys.modules[name]
    package = official_dir() / "hidiffusion"
    if not (package / "hidiffusion.py").is_file():
        raise ImportError(
            f"the official HiDiffusion package is not at {package}; install it there with "
            f"`pip install --no-deps --target {official_dir()} hidiffusion==0.1.10` "
            "or point HIDIFFUSION_OFFICIAL_DIR at the directory that contains its `hidiffusion/` folder")
    spec = importlib.util.spec_from_file_location(
        MODULE_NAME, package / "__init__.py", submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODULE_NAME]
        raise
    return importlib.import_module(name)


def to_diffusers(unet: torch.nn.Module, config: dict) -> torch.nn.Module:
    """A diffusers `UNet2DConditionModel` over the weight tensors of the ldm/sgm `unet` built from `config`.

    The twin holds the very tensors of `unet` (renamed, not copied): both cost one copy of the weights
    (SDXL fp32 is 10 GB), and a benchmark compares them on identical memory.

    `config` is the UNetModel keyword dict (`testbed.unets.unet_config`). SDXL's `label_emb`
    becomes a "projection" class embedding rather than diffusers' "text_time" one: the same MLP
    added to the time embedding, but fed with the ldm `y` vector itself (`run` passes it as
    `class_labels`), so no text_embeds/time_ids need to be reconstructed.
    """
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm

    checkpoint = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    original = {"model": {"params": {"unet_config": {"params": config},
                                     "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)      # image_size: given only to skip model sniffing
        diffusers_config = create_unet_diffusers_config_from_ldm(original, checkpoint, image_size=512)
    if diffusers_config["addition_embed_type"] == "text_time":
        diffusers_config.update(class_embed_type="projection", addition_embed_type=None, addition_time_embed_dim=None)
    with torch.device("meta"):
        twin = UNet2DConditionModel(**diffusers_config)
    twin.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, diffusers_config), strict=True, assign=True)
    return twin.eval()


def run(twin: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """One call of the diffusers twin with the ldm keyword inputs x/timesteps/context(/y)."""
    return twin(inputs["x"], inputs["timesteps"], encoder_hidden_states=inputs["context"],
                class_labels=inputs.get("y")).sample


def apply(twin: torch.nn.Module, model: str, raunet: bool = True, window_attention: bool = True,
          name_or_path: str = None) -> None:
    """Apply the official patch to `twin` as the official `model` ("sd15", "sd21", "sdxl").

    `name_or_path` overrides the official id (e.g. the SDXL inpainting id turns aggressive mode off).
    """
    twin.name_or_path = name_or_path or OFFICIAL_IDS[model]
    twin._num_timesteps = 1
    load().apply_hidiffusion(twin, apply_raunet=raunet, apply_window_attn=window_attention)
    set_step(twin, 0, 1)


def set_step(twin: torch.nn.Module, step: int, total: int) -> None:
    """Point every official call counter at executed step `step` of `total` (one UNet call per step)."""
    twin._num_timesteps = total
    for module in twin.modules():
        if hasattr(module, "_parent"):
            module.timestep = step


def remove(twin: torch.nn.Module) -> None:
    """Undo the official patch (it leaves `num_upsamplers` raised, which only forwards skip sizes)."""
    load().remove_hidiffusion(twin)


@contextlib.contextmanager
def pinned_shift(k: int):
    """Make the official MSW-MSA use shift k (0..3 quarter windows) in every block, via torch.rand."""
    if k not in range(4):
        raise ValueError(f"the shift must be 0, 1, 2 or 3 quarter windows; got {k}")
    value = torch.tensor([(k + 0.5) / 4])     # the middle of the official draw's k-th quarter
    with mock.patch.object(torch, "rand", lambda *args, **kwargs: value.clone()):
        yield


@contextlib.contextmanager
def thresholds(row: str, t1: float, t2: float, aggressive: bool = True):
    """Temporarily set the official T1/T2 ratios of table row `row` (e.g. "sd15_1024") and the
    SDXL aggressive switch, which the official code reads on every call."""
    module = load()
    saved = dict(module.switching_threshold_ratio_dict[row]), module.is_aggressive_raunet
    module.switching_threshold_ratio_dict[row].update(T1_ratio=t1, T2_ratio=t2)
    module.is_aggressive_raunet = aggressive
    try:
        yield
    finally:
        module.switching_threshold_ratio_dict[row].update(saved[0])
        module.is_aggressive_raunet = saved[1]
