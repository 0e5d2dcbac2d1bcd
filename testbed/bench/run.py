"""The measured run: every variant in this process, on UNets sharing one set of weights, calls interleaved."""
import datetime
import itertools
import sys
import time
from dataclasses import asdict
from typing import List, Optional

import torch

from hidiffusion import detect, resolve

from .flops import count_flops
from .measure import peak_activation, profile_call
from .report import summarise
from .variants import (VARIANTS, Config, Driver, TwinDriver, attention_context, model_spec, native_resolution,
                       passes, phases)


def pick_device(name: str) -> tuple:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    return device, torch.float16 if device.type == "cuda" else torch.float32


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return "CPU " + next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU"


def interleave(per_variant: List[list]) -> list:
    """Round robin over the variants' lists: v1 v2 v3, v1 v2 v3, ..."""
    return [item for items in itertools.zip_longest(*per_variant) for item in items if item is not None]


def make_drivers(config: Config, entries: List[dict], unet, model: str, overrides: dict, dtype) -> dict:
    """(variant, pass index) -> its driver. Each variant gets its own module, as patches are per
    module, over the weight tensors of `unet` itself."""
    from .. import official
    from ..unets import example_inputs, sharing_weights, unet_config
    architecture = detect(unet)
    device = next(unet.parameters()).device
    inputs, drivers = {}, {}
    try:
        for entry in entries:
            name, variant = entry["name"], VARIANTS[entry["name"]]
            if variant.twin:
                host = official.to_diffusers(
                    unet, unet_config(model, tiny=not config.full and not config.checkpoint, **overrides))
            else:
                host = sharing_weights(unet) if variant.engine else unet
            for index, run in enumerate(passes(name, config, native_resolution(architecture))):
                size = (run.width, run.height)
                if size not in inputs:
                    inputs[size] = example_inputs(unet, model, config.batch, run.height // 8, run.width // 8,
                                                  seed=config.seed, dtype=dtype, device=device)
                if variant.twin:
                    plan = resolve(architecture, config.settings(name), run.width, run.height) \
                        if name == "official" else None
                    drivers[name, index] = TwinDriver(host, model, run, inputs[size], plan)
                else:
                    drivers[name, index] = Driver(host, config, run, inputs[size])
    except BaseException:
        for driver in drivers.values():
            driver.close()
        raise
    return drivers


def run_variants(config: Config, entries: List[dict], bar) -> dict:
    """Fill each phase's `activation_bytes`, `samples` (seconds of each timed step, per repeat) and
    `profile`, all variants in this process; return where it ran."""
    from ..unets import build_unet, load_unet
    device, dtype = pick_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.checkpoint:
        model, unet = load_unet(config.checkpoint)
        overrides = model_spec(config)[1]
    else:
        model, unet, overrides = config.model, build_unet(config.model, tiny=not config.full, seed=config.seed), {}
    unet = unet.to(device=device, dtype=dtype)
    drivers = make_drivers(config, entries, unet, model, overrides, dtype)

    def call(entry, phase, step):
        return lambda: drivers[entry["name"], phase["pass_index"]](step)

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    every_phase = interleave([[(entry, phase) for phase in entry["phases"]] for entry in entries])
    timed = interleave([[(entry, phase, step) for phase in entry["phases"] for step in phase["timed_step_indices"]]
                        for entry in entries])
    try:
        # CUDA runs fp16 as the webui does: half weights under autocast (ldm embeds timesteps in fp32).
        autocast = torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda")
        with torch.inference_mode(), attention_context(model), autocast:
            for entry, phase in every_phase:
                phase["activation_bytes"] = peak_activation(call(entry, phase, phase["step_indices"][0]), device)
                phase["samples"] = [[] for _ in range(config.repeats)]
                bar.update(1)
            for entry, phase in every_phase if config.profile else ():
                phase["profile"] = profile_call(call(entry, phase, phase["step_indices"][0]))
                bar.update(1)
            for repeat in range(config.repeats):
                bar.set_postfix_str(f"repeat {repeat + 1}/{config.repeats}")
                for entry, phase, step in timed:
                    run = call(entry, phase, step)
                    sync()
                    start = time.perf_counter()
                    run()
                    sync()
                    phase["samples"][repeat].append(time.perf_counter() - start)
                    bar.update(1)
    finally:
        for driver in drivers.values():
            driver.close()
    return dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
                dtype=str(dtype).replace("torch.", ""), threads=torch.get_num_threads(),
                weights_bytes=sum(p.numel() * p.element_size() for p in unet.parameters()))


def twin_unavailable(variant: str) -> Optional[str]:
    """None when a variant on the diffusers twin can run, else why not."""
    try:
        import diffusers  # noqa: F401
        if variant == "official":
            from .. import official
            official.load()
    except Exception as error:       # noqa: BLE001 - any failure to load it is a reason to skip
        return f"not loadable: {type(error).__name__}: {error}"
    return None


def benchmark(config: Config, progress: bool = True) -> dict:
    """Run every variant `config.repeats` times, interleaved; return the report (a JSON-able dict)."""
    from tqdm import tqdm
    from ..unets import build_unet
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if config.profile and pick_device(config.device)[0].type != "cpu":
        raise ValueError("--profile groups the ops' CPU time, which on CUDA is only their launch; use --device cpu")
    model, overrides = model_spec(config)
    config.model = model
    architecture = detect(build_unet(model, tiny=not config.full and not config.checkpoint, device="meta",
                                     **overrides))
    report = dict(command=config.command(), config=asdict(config), model=config.model_title,
                  date=datetime.date.today().isoformat(), torch=torch.__version__,
                  plan=resolve(architecture, config.settings("hidiffusion"), config.width, config.height).describe(),
                  variants=[])
    entries = {}
    for variant in config.variants:
        reason = twin_unavailable(variant) if VARIANTS[variant].twin else None
        entry = dict(name=variant, description=VARIANTS[variant].description, baseline=VARIANTS[variant].baseline,
                     status="skipped" if reason else "ok", reason=reason,
                     phases=phases(variant, config, architecture))
        if not reason:
            count_flops(config, entry["phases"], variant)
        entries[variant] = entry
        report["variants"].append(entry)

    runnable = [entry for entry in entries.values() if entry["status"] == "ok"]
    phase_count = sum(len(entry["phases"]) for entry in runnable)
    calls = phase_count * (2 if config.profile else 1) + config.repeats * sum(
        len(phase["timed_step_indices"]) for entry in runnable for phase in entry["phases"])
    with tqdm(total=calls, unit="call", desc="UNet calls", disable=not progress, file=sys.stderr) as bar:
        report.update(run_variants(config, runnable, bar))
    summarise(report, entries)
    return report
