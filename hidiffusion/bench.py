"""`python -m hidiffusion bench`: how much faster and leaner HiDiffusion is, measured, not claimed.

Every variant samples the same schedule (steps, T1/T2 phases as the engine sets them) on identical
inputs: the same UNet weights, latents and conditioning from one seed. Only the UNet calls are timed.

* Like for like: every variant runs in this one process, on its own UNet object over one shared set of
  weight tensors (the diffusers twin of the official code included), with the same threads, warm-up
  and allocator. Calls are interleaved (v1 v2 v3, v1 v2 v3, ...) so that drift on a noisy machine
  hits every variant alike; each phase's seconds per step are the median over the repeats.
* Each phase of each variant first gets one untimed call (kernels are chosen per shape on the first
  call), run under torch.profiler: its peak activation memory is the highest level of the tensor
  bytes the call allocates and frees again, i.e. peak minus weights, inputs and caches that outlive it.
* `--steps-per-phase N` times only the first N steps of each phase and scales by the phase's steps.
* The ideal ratio is counted, not estimated: one UNet call per distinct phase runs under
  `torch.utils.flop_counter.FlopCounterMode` on a meta-device twin (no weights, no arithmetic),
  weighted by the phase's steps. Efficiency = ideal ratio / measured ratio (>100 %: faster than FLOPs say).
* `--profile`: one more call per phase under torch.profiler, its ops' self times grouped by kind.
"""
import argparse
import datetime
import itertools
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile, record_function

from .architecture import detect
from .patch import apply
from .schedule import Settings, resolve


@dataclass(frozen=True)
class Variant:
    description: str
    baseline: str = "vanilla"                     # the variant its ratios are taken against
    engine: Optional[Tuple[bool, bool]] = None    # Settings(raunet, window_attention) of our patch
    twin: bool = False                            # runs on the diffusers twin, not the ldm/sgm UNet
    flops_as: Optional[str] = None                # counted as this variant: the official code needs real tensors


VARIANTS = {
    "vanilla": Variant("the unpatched ldm/sgm UNet, every step at the target size"),
    "hidiffusion": Variant("RAU-Net + MSW-MSA as resolved for this model and size", engine=(True, True)),
    "raunet": Variant("RAU-Net only", engine=(True, False)),
    "msw-msa": Variant("MSW-MSA only", engine=(False, True)),
    "disabled": Variant("patch applied but never switched on: the cost of the idle hooks", engine=(True, True)),
    "vanilla-diffusers": Variant("the unpatched diffusers twin over the same weight tensors: the official code's "
                                 "vanilla", twin=True, flops_as="vanilla"),
    "official": Variant("official hidiffusion 0.1.10 on the diffusers twin, same T1/T2",
                        baseline="vanilla-diffusers", twin=True, flops_as="hidiffusion"),
    "hires-fix": Variant("Hires. fix: all steps at the native size, then int(strength*steps)+1 at the target size"),
}
UNPATCHED = ("vanilla", "vanilla-diffusers", "disabled")     # one phase, named after the variant
MODELS = {"sd15": "SD1.5", "sd21": "SD2.1", "sdxl": "SDXL"}
MIB = 2 ** 20
# --profile: profiler op names -> kind, by the first kind with a fragment in the name; the rest are "other ops".
OP_KINDS = {
    "convolution": ("conv",),
    "attention": ("attention",),
    "linear": ("linear", "mm"),
    "normalization": ("norm",),
    "resampling": ("upsample", "pool"),
    "gathers": ("index_select", "roll"),
    "copies": ("copy", "clone", "contiguous", "aten::cat"),
}
OUTSIDE_OPS = "Python and dispatch"      # the call's time in no op: module code, hooks, the framework
CALL_LABEL = "UNet call"


@dataclass
class Config:
    model: str = "sd15"
    full: bool = False
    checkpoint: Optional[str] = None
    width: int = 1024
    height: int = 1024
    batch: int = 1
    steps: int = 5
    t1: Optional[float] = None
    t2: Optional[float] = None
    strength: float = 0.5
    hires_steps: Optional[int] = None
    repeats: int = 3
    steps_per_phase: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None
    profile: bool = False
    variants: List[str] = field(default_factory=lambda: list(VARIANTS))

    @property
    def model_title(self) -> str:
        if self.checkpoint:
            return f"{MODELS[self.model]} ({Path(self.checkpoint).name})"
        return MODELS[self.model] + ("" if self.full else " (tiny twin)")

    def settings(self, variant: str) -> Settings:
        raunet, window_attention = VARIANTS[variant].engine or (True, True)
        return Settings(raunet=raunet, window_attention=window_attention, t1=self.t1, t2=self.t2)

    def command(self) -> str:
        """The command line that reproduces this run."""
        default, args = Config(), ["python -m hidiffusion bench"]
        for name, value in asdict(self).items():
            if name == "variants" or value == getattr(default, name) or (name == "model" and self.checkpoint):
                continue
            flag = "--" + name.replace("_", "-")
            args.append(flag if value is True else f"{flag} {value}")
        if self.variants != default.variants:
            args.append("--variants " + ",".join(self.variants))
        return " ".join(args)


@dataclass
class Pass:
    """One sampling pass of a variant: `steps` executed steps at width x height."""
    width: int
    height: int
    steps: int
    variant: str                # which patch drives it: "vanilla" (none), an engine variant, or "official"
    label: str = ""             # prefix of its phase names (Hires. fix: "1st"/"2nd")


def hires_size(config: Config, native: int) -> tuple:
    """First-pass size of Hires. fix: the target's aspect ratio at the model's native pixel count
    (the target itself when that is not larger)."""
    scale = max(1.0, (config.width * config.height) ** 0.5 / native)
    return tuple(max(8, round(side / scale / 8) * 8) for side in (config.width, config.height))


def passes(variant: str, config: Config, native: int) -> List[Pass]:
    if variant == "hires-fix":
        width, height = hires_size(config, native)
        # The webui's img2img rule: t_enc = int(min(strength, 0.999) * steps), then t_enc + 1 steps run.
        second = int(min(config.strength, 0.999) * (config.hires_steps or config.steps)) + 1
        return [Pass(width, height, config.steps, "vanilla", "1st "),
                Pass(config.width, config.height, second, "vanilla", "2nd ")]
    return [Pass(config.width, config.height, config.steps, variant)]


def phase_name(variant: str, plan, step: int, total: int) -> str:
    """What runs at this step, in the method's words."""
    if variant in UNPATCHED:
        return variant
    phase = plan.phase(step, total)
    parts = [name for name, on in (("RAD", phase.rad), ("CA", phase.ca)) if on]
    if plan.settings.window_attention:
        parts.append("MSW-MSA")
    return "+".join(parts) or "vanilla"


def phases(variant: str, config: Config, architecture) -> List[dict]:
    """The distinct phases of a variant in order: name, size, pass and the step indices in that pass."""
    result = {}
    for index, run in enumerate(passes(variant, config, native_resolution(architecture))):
        plan = resolve(architecture, config.settings(run.variant), run.width, run.height)
        for step in range(run.steps):
            name = run.label + phase_name(run.variant, plan, step, run.steps)
            if name not in result:
                result[name] = dict(name=name, width=run.width, height=run.height, pass_index=index,
                                    step_indices=[])
            result[name]["step_indices"].append(step)
    for phase in result.values():
        phase["steps"] = len(phase["step_indices"])
        phase["timed_step_indices"] = phase["step_indices"][:config.steps_per_phase]
    return list(result.values())


def native_resolution(architecture) -> int:
    return resolve(architecture, Settings(), 1024, 1024).native_resolution


# ----------------------------------------------------------------------------------------------
# Loading the model and driving one pass (shared by the measured run and the FLOP count)

def model_spec(config: Config) -> tuple:
    """(model, overrides) of the UNet to build: from the checkpoint's header or the chosen model."""
    from .unets import checkpoint_config
    if config.checkpoint:
        return checkpoint_config(config.checkpoint)
    return config.model, {}


def attention_context(model: str):
    """The UNet as the webui runs it: sdp attention for ldm (its stock einsum attention would not fit at
    1024 px), and skips of odd sizes resized before their concatenation (else vanilla fails at 1080 px)."""
    import contextlib
    from .unets import sdp_attention, webui_skip_concat
    stack = contextlib.ExitStack()
    stack.enter_context(webui_skip_concat(model))
    if model != "sdxl":
        stack.enter_context(sdp_attention())
    return stack


class Driver:
    """Runs the UNet calls of one pass with the variant's patch switched as the engine would."""

    def __init__(self, unet, config: Config, run: Pass, inputs: dict):
        self.unet, self.run, self.inputs = unet, run, inputs
        self.patch = None
        if VARIANTS[run.variant].engine:
            plan = resolve(detect(unet), config.settings(run.variant), run.width, run.height)
            self.patch = apply(unet, plan, seed=config.seed)

    def __call__(self, step: int):
        if self.patch is not None and self.run.variant != "disabled":
            self.patch.set_step(step, self.run.steps)
        return self.unet(**self.inputs)

    def close(self):
        if self.patch is not None:
            self.patch.remove()


class TwinDriver:
    """The same pass on the diffusers twin: unpatched, or patched by the official hidiffusion 0.1.10
    with its call counters pointed at each step and its T1/T2 table row set to what our plan resolved."""

    def __init__(self, twin, model: str, run: Pass, inputs: dict, plan=None):
        from . import official
        self.official, self.twin, self.run, self.inputs, self.plan = official, twin, run, inputs, plan
        if plan is not None:
            latent_side = min(run.width, run.height) // 8
            row = ("sdxl_2048" if latent_side < 512 else "sdxl_4096") if model == "sdxl" else \
                ("sd15_1024" if latent_side < 256 else "sd15_2048")
            self.thresholds = official.thresholds(row, plan.t1, plan.t2, plan.aggressive)
            self.thresholds.__enter__()
            official.apply(twin, model)

    def __call__(self, step: int):
        if self.plan is not None:
            self.official.set_step(self.twin, step, self.run.steps)
        return self.official.run(self.twin, self.inputs)

    def close(self):
        if self.plan is not None:
            self.official.remove(self.twin)
            self.thresholds.__exit__(None, None, None)


def count_flops(config: Config, phase_list: List[dict], variant: str) -> None:
    """Fill `flops_per_step` of each phase: one UNet call on a meta-device twin under FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    from .unets import build_unet, example_inputs
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


# ----------------------------------------------------------------------------------------------
# Measuring one call: peak activation memory and where the time goes

def peak_activation(call, device: torch.device) -> int:
    """Peak bytes of the tensors that `call()` allocates on `device` and frees again: its activations.

    What the call keeps (a cache filled on a first call, like MSW-MSA's token orders) is not counted,
    nor is anything allocated before it (weights, inputs): peak minus what outlives the call.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        call()
    changes = []        # (time, address, signed bytes) of every allocation and free on the device

    def collect(event):
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == device.type:
            changes.append((event.start_time_ns, event.extra_fields.ptr, event.extra_fields.alloc_size))
        for child in event.children:
            collect(child)

    for root in profiler.profiler.kineto_results.experimental_event_tree():
        collect(root)
    changes.sort(key=lambda change: change[0])
    allocated, transient = {}, set()      # address -> index of its allocation; indices of paired changes
    for index, (_, address, size) in enumerate(changes):
        if size > 0:
            allocated[address] = index
        elif address in allocated:
            transient.update((allocated.pop(address), index))
    sizes = (size for index, (_, _, size) in enumerate(changes) if index in transient)
    return max(itertools.accumulate(sizes, initial=0))


def op_kind(name: str) -> str:
    return next((kind for kind, fragments in OP_KINDS.items() if any(f in name for f in fragments)), "other ops")


def profile_call(call) -> dict:
    """Seconds of one call under torch.profiler: `seconds` in all, `groups` by kind of op. Self times
    (an op's time minus its child ops'), so nothing counts twice and the groups add up to the call."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        with record_function(CALL_LABEL):
            call()
    groups = dict.fromkeys([*OP_KINDS, "other ops", OUTSIDE_OPS], 0.0)
    seconds = 0.0
    for op in profiler.key_averages():
        if op.key == CALL_LABEL:
            seconds = op.cpu_time_total / 1e6
        groups[OUTSIDE_OPS if op.key == CALL_LABEL else op_kind(op.key)] += op.self_cpu_time_total / 1e6
    return dict(seconds=seconds, groups=groups)


# ----------------------------------------------------------------------------------------------
# The measured run: every variant in this process, interleaved

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
    from . import official
    from .unets import example_inputs, sharing_weights, unet_config
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
    from .unets import build_unet, load_unet
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
        with torch.inference_mode(), attention_context(model):
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
            from . import official
            official.load()
    except Exception as error:       # noqa: BLE001 - any failure to load it is a reason to skip
        return f"not loadable: {type(error).__name__}: {error}"
    return None


# ----------------------------------------------------------------------------------------------
# The report

def benchmark(config: Config, progress: bool = True) -> dict:
    """Run every variant `config.repeats` times, interleaved; return the report (a JSON-able dict)."""
    from tqdm import tqdm
    from .unets import build_unet
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
    _summarise(report, entries)
    return report


def _summarise(report: dict, entries: dict) -> None:
    """Seconds per phase and variant, ratios to each variant's baseline, ideal ratios and efficiency, in place."""
    for entry in entries.values():
        if entry["status"] != "ok":
            continue
        for phase in entry["phases"]:
            phase["seconds_per_step"] = statistics.median(statistics.fmean(times) for times in phase["samples"])
            phase["seconds"] = phase["seconds_per_step"] * phase["steps"]
        entry["unet_seconds"] = sum(phase["seconds"] for phase in entry["phases"])
        entry["flops"] = sum(phase["flops_per_step"] * phase["steps"] for phase in entry["phases"])
        entry["activation_bytes"] = max(phase["activation_bytes"] for phase in entry["phases"])
    for entry in entries.values():
        baseline = entries.get(entry["baseline"], {})
        if "unet_seconds" not in entry or "unet_seconds" not in baseline:
            continue
        entry["ratio"] = entry["unet_seconds"] / baseline["unet_seconds"]
        entry["ideal_ratio"] = entry["flops"] / baseline["flops"]
        entry["efficiency"] = entry["ideal_ratio"] / entry["ratio"]
        entry["activation_ratio"] = entry["activation_bytes"] / max(baseline["activation_bytes"], 1)
    report["targets"] = _targets(entries)


def _targets(entries: dict) -> dict:
    """The issue's targets, as numbers (None where a variant did not run)."""
    def get(name, key):
        return entries[name].get(key) if name in entries else None

    ours, theirs, hires = (get(name, "unet_seconds") for name in ("hidiffusion", "official", "hires-fix"))
    disabled = get("disabled", "ratio")
    engine = [get(name, "activation_ratio") for name in entries if VARIANTS[name].engine]
    return {
        "hidiffusion_efficiency": get("hidiffusion", "efficiency"),
        "ours_over_official": ours / theirs if ours and theirs else None,
        "ours_over_official_by_phase": {
            mine["name"]: mine["seconds_per_step"] / official["seconds_per_step"]
            for mine, official in zip(entries["hidiffusion"]["phases"], entries["official"]["phases"])
        } if ours and theirs else None,
        "vanilla_diffusers_over_vanilla": get("vanilla-diffusers", "ratio"),
        "disabled_overhead": disabled - 1 if disabled is not None else None,
        "activation_ratio": get("hidiffusion", "activation_ratio"),
        "max_engine_activation_ratio": max((ratio for ratio in engine if ratio is not None), default=None),
        "hidiffusion_over_hires_fix": ours / hires if ours and hires else None,
    }


# ----------------------------------------------------------------------------------------------
# Output: table, JSON, plot

def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """Markdown tables, readable in a terminal and pasteable into a README."""
    config, targets = report["config"], report["targets"]
    sampled = config["steps_per_phase"]
    lines = [f"HiDiffusion bench, {report['date']}: {report['model']} {config['width']}x{config['height']}, "
             f"batch {config['batch']}, {config['steps']} steps"
             + (f" (timed: the first {sampled} of each phase, times its steps)" if sampled else "")
             + f", {report.get('device', '?')} {report.get('dtype', '')} ({report.get('threads', '?')} threads), "
             f"torch {report['torch']}, median of {config['repeats']}, variants interleaved in one process",
             f"plan: {report['plan']}",
             f"command: {report['command']}",
             "",
             "| variant | vs | UNet s | ratio | ideal (FLOPs) | efficiency | peak activation MiB | activation ratio "
             "| by phase: s/step (×steps), activation MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for entry in report["variants"]:
        if entry["status"] != "ok":
            lines.append(f"| {entry['name']} | {entry['status']}: {entry['reason']} ||||||||")
            continue
        by_phase = ", ".join(f"{p['name']} {p['width']}x{p['height']} {p['seconds_per_step']:.3g} (×{p['steps']}) "
                             f"{p['activation_bytes'] / MIB:.0f}" for p in entry["phases"])
        lines.append(
            f"| {entry['name']} | {entry['baseline']} | {entry['unet_seconds']:.3g} | {_fmt(entry.get('ratio'), '.3f')} "
            f"| {_fmt(entry.get('ideal_ratio'), '.3f')} | {_fmt(entry.get('efficiency'), '.0%')} "
            f"| {entry['activation_bytes'] / MIB:.0f} | {_fmt(entry.get('activation_ratio'), '.2f')} | {by_phase} |")
    by_phase = targets["ours_over_official_by_phase"] or {}
    lines += ["",
              "like for like: ours/official " + _fmt(targets["ours_over_official"], ".3f")
              + "".join(f", {name} {ratio:.3f}" for name, ratio in by_phase.items())
              + "; vanilla-diffusers/vanilla " + _fmt(targets["vanilla_diffusers_over_vanilla"], ".3f"),
              "targets: HiDiffusion efficiency " + _fmt(targets["hidiffusion_efficiency"], ".0%") + " (>= 90 %); "
              "ours/official " + _fmt(targets["ours_over_official"], ".3f") + " (<= 0.95); "
              "disabled overhead " + _fmt(targets["disabled_overhead"], "+.1%") + " (<= 1 %); "
              "activation memory " + _fmt(targets["activation_ratio"], ".2f") + "x vanilla (<= 0.6 at 2048 px), "
              "at most " + _fmt(targets["max_engine_activation_ratio"], ".2f") + "x in any engine variant (<= 1); "
              "HiDiffusion/Hires. fix " + _fmt(targets["hidiffusion_over_hires_fix"], ".3f") + " (< 1)"]
    if config["profile"]:
        lines += format_profile(report)
    return "\n".join(lines)


def format_profile(report: dict) -> List[str]:
    """One row per variant and phase: the profiled call's seconds and each kind's share of them."""
    kinds = [*OP_KINDS, "other ops", OUTSIDE_OPS]
    lines = ["", "profile: one warm call per phase under torch.profiler, self time of its ops by kind, % of the call",
             "| variant | phase | call s | " + " | ".join(kinds) + " |", "|---|---|---:|" + "---:|" * len(kinds)]
    for entry in report["variants"]:
        for phase in entry["phases"] if entry["status"] == "ok" else ():
            profiled = phase["profile"]
            lines.append(f"| {entry['name']} | {phase['name']} | {profiled['seconds']:.3g} | "
                         + " | ".join(f"{profiled['groups'][kind] / profiled['seconds']:.0%}" for kind in kinds) + " |")
    return lines


def plot_report(report: dict, path: str) -> None:
    """Horizontal stacked bars: UNet seconds per variant, one segment per phase."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    entries = [e for e in report["variants"] if e["status"] == "ok"]
    names = list(dict.fromkeys(p["name"] for e in entries for p in e["phases"]))
    colours = dict(zip(names, plt.get_cmap("tab10").colors * 3))
    figure, axes = plt.subplots(figsize=(9, 0.6 * len(entries) + 1.6))
    for row, entry in enumerate(entries):
        left = 0.0
        for phase in entry["phases"]:
            axes.barh(row, phase["seconds"], left=left, color=colours[phase["name"]],
                      label=phase["name"] if phase["name"] in names else None)
            if phase["name"] in names:
                names.remove(phase["name"])         # one legend entry per phase name
            left += phase["seconds"]
        ratio = entry.get("ratio")
        axes.text(left, row, f" {left:.3g} s" + (f" ({ratio:.2f}x)" if ratio is not None else ""), va="center")
    axes.set_yticks(range(len(entries)), [e["name"] for e in entries])
    axes.invert_yaxis()
    axes.set_xlabel("UNet seconds (median)")
    config = report["config"]
    axes.set_title(f"{report['model']} {config['width']}x{config['height']}, {config['steps']} steps, "
                   f"{report.get('device', '')} {report.get('dtype', '')}")
    axes.margins(x=0.2)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ----------------------------------------------------------------------------------------------
# Command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=list(MODELS), default=defaults.model,
                       help="architecture with random weights (default %(default)s)")
    model.add_argument("--full", action="store_true",
                       help="full-size UNet (SD1.5 859 M parameters, SDXL 2.6 G) instead of the tiny twin, which "
                            "keeps every block with narrow channels: quick, but its time is mostly attention")
    model.add_argument("--checkpoint", metavar="FILE.safetensors",
                       help="take the UNet weights from a single-file checkpoint (ldm/sgm keys "
                            "model.diffusion_model.*); the architecture is read from it and --model/--full ignored")
    run = parser.add_argument_group("sampling schedule")
    run.add_argument("--width", type=int, default=defaults.width, help="target width in pixels (default %(default)s)")
    run.add_argument("--height", type=int, default=defaults.height,
                     help="target height in pixels (default %(default)s)")
    run.add_argument("--batch", type=int, default=defaults.batch,
                     help="UNet batch; the webui batches cond+uncond, so 2 = one image with CFG (default %(default)s)")
    run.add_argument("--steps", type=int, default=defaults.steps,
                     help="executed sampling steps, one UNet call each; scale down from 20 keeping the phase "
                          "proportions (5 or 10 at T1 0.4) (default %(default)s)")
    run.add_argument("--t1", type=float, help="T1 ratio override (default: the official table for the size)")
    run.add_argument("--t2", type=float, help="T2 ratio override (default: the official table for the size)")
    run.add_argument("--strength", type=float, default=defaults.strength,
                     help="Hires. fix denoising strength: its second pass runs int(strength*steps)+1 steps "
                          "(default %(default)s)")
    run.add_argument("--hires-steps", type=int,
                     help="Hires. fix second-pass steps before the strength cut (default: --steps, as the webui)")
    measure = parser.add_argument_group("measurement")
    measure.add_argument("--variants", default=",".join(defaults.variants),
                         help="comma-separated subset of: " + "; ".join(f"{k} = {v}" for k, v in VARIANTS.items()))
    measure.add_argument("--repeats", type=int, default=defaults.repeats,
                         help="timed runs of each variant, interleaved call by call across variants, after one "
                              "untimed call per phase that measures its memory; medians are reported "
                              "(default %(default)s)")
    measure.add_argument("--steps-per-phase", type=int, metavar="N",
                         help="time only the first N steps of each phase and scale by its steps: for sizes where "
                              "a call takes minutes (default: every step)")
    measure.add_argument("--seed", type=int, default=defaults.seed,
                         help="seed of the weights, inputs and window shifts (default %(default)s)")
    measure.add_argument("--device", default=defaults.device,
                         help="auto (CUDA with fp16 when available, else CPU fp32), cpu, cuda or cuda:N "
                              "(default %(default)s)")
    measure.add_argument("--threads", type=int,
                         help="CPU threads (default: torch's choice, usually one per core)")
    measure.add_argument("--profile", action="store_true",
                         help="one more call per phase under torch.profiler: where its time goes by kind of op "
                              "(convolution, attention, our gathers, ...) and outside any op (CPU only)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    output.add_argument("--plot", metavar="FILE.png", help="bar chart of UNet time per variant and phase")
    output.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def config_from_args(args: argparse.Namespace) -> Config:
    names = set(Config.__dataclass_fields__) - {"variants"}
    config = Config(**{name: getattr(args, name) for name in names})
    config.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    return config


def main(args: argparse.Namespace) -> dict:
    report = benchmark(config_from_args(args), progress=not args.no_progress)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.plot:
        plot_report(report, args.plot)
    return report
