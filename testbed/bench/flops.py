"""The ideal ratio, counted rather than estimated: one UNet call per distinct phase on a meta-device twin
(no weights, no arithmetic) under FlopCounterMode, weighted by the phase's steps."""
from typing import List

import torch

from hidiffusion import detect

from .variants import VARIANTS, Config, Driver, attention_context, model_spec, native_resolution, passes


def count_flops(config: Config, phase_list: List[dict], variant: str) -> None:
    """Fill `flops_per_step` of each phase: one UNet call on a meta-device twin under FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    from ..unets import build_unet, example_inputs
    model, overrides = model_spec(config)
    unet = build_unet(model, tiny=not config.full and not config.checkpoint, device="meta", **overrides)
    runs = passes(VARIANTS[variant].flops_as or variant, config, native_resolution(detect(unet)))
    with torch.inference_mode(), attention_context(model):
        for phase in phase_list:
            run = runs[phase["pass_index"]]
            inputs = example_inputs(unet, model, config.batch, run.height // 8, run.width // 8, device="meta")
            driver = Driver(unet, config, run, inputs)
            try:
                with FlopCounterMode(display=False) as counter:
                    driver(phase["step_indices"][0])
            finally:
                driver.close()
            phase["flops_per_step"] = counter.get_total_flops()
