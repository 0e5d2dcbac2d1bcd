"""`python -m hidiffusion bench`: how much faster and leaner HiDiffusion is, measured, not claimed.

Every variant samples the same schedule (steps, T1/T2 phases as the engine sets them) on identical
inputs: the same UNet weights, latents and conditioning from one seed. Only the UNet calls are timed.

* Each (variant, repeat) runs in its own subprocess, so its peak memory is its own; repeats are
  interleaved (v1 v2 v3, v1 v2 v3, ...) so that drift on a noisy machine hits every variant alike, and
  medians are reported.
* The ideal ratio is counted, not estimated: one UNet call per distinct phase runs under
  `torch.utils.flop_counter.FlopCounterMode` on a meta-device twin (no weights, no arithmetic),
  weighted by the phase's steps. Efficiency = ideal ratio / measured ratio (>100 %: faster than FLOPs say).
* Peak memory: CUDA `max_memory_allocated`; CPU the process's peak RSS (VmHWM, reset after the
  model is loaded). "Activation" memory is that peak minus the memory held before the first call.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import torch

from .architecture import detect
from .patch import apply
from .schedule import Settings, resolve

VARIANTS = {
    "vanilla": "the unpatched UNet, every step at the target size",
    "hidiffusion": "RAU-Net + MSW-MSA as resolved for this model and size",
    "raunet": "RAU-Net only",
    "msw-msa": "MSW-MSA only",
    "disabled": "patch applied but never switched on: the cost of the idle hooks",
    "official": "official hidiffusion 0.1.10 on a diffusers twin with the same weights, same T1/T2",
    "hires-fix": "Hires. fix: all steps at the native size, then int(strength*steps)+1 at the target size",
}
VARIANT_SETTINGS = {           # Settings(raunet, window_attention) of the engine variants
    "hidiffusion": (True, True), "raunet": (True, False), "msw-msa": (False, True), "disabled": (True, True),
}
MODELS = {"sd15": "SD1.5", "sd21": "SD2.1", "sdxl": "SDXL"}
MIB = 2 ** 20


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
    warmup: int = 1
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None
    variants: List[str] = field(default_factory=lambda: list(VARIANTS))

    @property
    def model_title(self) -> str:
        if self.checkpoint:
            return f"{MODELS[self.model]} ({Path(self.checkpoint).name})"
        return MODELS[self.model] + ("" if self.full else " (tiny twin)")

    def settings(self, variant: str) -> Settings:
        raunet, window_attention = VARIANT_SETTINGS.get(variant, (True, True))
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
    if variant in ("vanilla", "disabled"):
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
    return list(result.values())


def native_resolution(architecture) -> int:
    return resolve(architecture, Settings(), 1024, 1024).native_resolution


# ----------------------------------------------------------------------------------------------
# Loading the model and driving one pass (shared by the worker and the FLOP count)

def model_spec(config: Config) -> tuple:
    """(model, overrides) of the UNet to build: from the checkpoint's header or the chosen model."""
    from .unets import checkpoint_config
    if config.checkpoint:
        return checkpoint_config(config.checkpoint)
    return config.model, {}


def attention_context(model: str):
    """Webui-style sdp attention for ldm (its stock einsum attention would not fit at 1024 px)."""
    import contextlib
    from .unets import sdp_attention
    return contextlib.nullcontext() if model == "sdxl" else sdp_attention()


class Driver:
    """Runs the UNet calls of one pass with the variant's patch switched as the engine would."""

    def __init__(self, unet, config: Config, run: Pass, inputs: dict):
        self.unet, self.run, self.inputs = unet, run, inputs
        self.patch = None
        if run.variant in VARIANT_SETTINGS:
            plan = resolve(detect(unet), config.settings(run.variant), run.width, run.height)
            self.patch = apply(unet, plan, seed=config.seed)

    def __call__(self, step: int):
        if self.patch is not None and self.run.variant != "disabled":
            self.patch.set_step(step, self.run.steps)
        return self.unet(**self.inputs)

    def close(self):
        if self.patch is not None:
            self.patch.remove()


class OfficialDriver:
    """The same pass on the official code: a diffusers twin patched by hidiffusion 0.1.10, its call
    counters pointed at each step, its T1/T2 table row set to the values our plan resolved."""

    def __init__(self, twin, model: str, run: Pass, inputs: dict, plan):
        from . import official
        self.official, self.twin, self.run, self.inputs = official, twin, run, inputs
        latent_side = min(run.width, run.height) // 8
        row = ("sdxl_2048" if latent_side < 512 else "sdxl_4096") if model == "sdxl" else \
            ("sd15_1024" if latent_side < 256 else "sd15_2048")
        self.thresholds = official.thresholds(row, plan.t1, plan.t2, plan.aggressive)
        self.thresholds.__enter__()
        official.apply(twin, model)

    def __call__(self, step: int):
        self.official.set_step(self.twin, step, self.run.steps)
        return self.official.run(self.twin, self.inputs)

    def close(self):
        self.official.remove(self.twin)
        self.thresholds.__exit__(None, None, None)


def count_flops(config: Config, phase_list: List[dict], variant: str) -> None:
    """Fill `flops_per_step` of each phase: one UNet call on a meta-device twin under FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    from .unets import build_unet, example_inputs
    model, overrides = model_spec(config)
    unet = build_unet(model, tiny=not config.full and not config.checkpoint, device="meta", **overrides)
    runs = passes("hidiffusion" if variant == "official" else variant, config,
                  native_resolution(detect(unet)))
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
# The worker: one variant, one repeat, in its own process

def pick_device(name: str) -> tuple:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    return device, torch.float16 if device.type == "cuda" else torch.float32


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class Memory:
    """Peak memory of this process from now on: CUDA max allocated, or CPU peak RSS (Linux VmHWM)."""

    def __init__(self, device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            self.before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            self.before = _proc_status("VmRSS")
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")     # reset VmHWM to the current RSS

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return _proc_status("VmHWM")


def run_job(config: Config, variant: str, progress=lambda: None) -> dict:
    """Time every UNet call of one variant; return seconds per pass and step, and peak memory."""
    from .unets import build_unet, example_inputs, load_unet, unet_config
    device, dtype = pick_device(config.device)
    torch.set_grad_enabled(False)
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.checkpoint:
        model, unet = load_unet(config.checkpoint)
        overrides = model_spec(config)[1]
    else:
        model, unet, overrides = config.model, build_unet(config.model, tiny=not config.full, seed=config.seed), {}
    architecture = detect(unet)
    runs = passes(variant, config, native_resolution(architecture))
    inputs = [{k: v.to(device) for k, v in example_inputs(unet, model, config.batch, run.height // 8, run.width // 8,
                                                          seed=config.seed, dtype=dtype).items()} for run in runs]
    if variant == "official":
        from . import official
        twin = official.to_diffusers(unet, unet_config(model, tiny=not config.full and not config.checkpoint,
                                                       **overrides))
        del unet
        unet = twin
    unet = unet.to(device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    memory = Memory(device)
    seconds = []
    with torch.inference_mode(), attention_context(model):
        for index, run in enumerate(runs):
            if variant == "official":
                plan = resolve(architecture, config.settings("hidiffusion"), run.width, run.height)
                driver = OfficialDriver(unet, model, run, inputs[index], plan)
            else:
                driver = Driver(unet, config, run, inputs[index])
            try:
                for _ in range(config.warmup if index == 0 else 0):
                    driver(0)
                times = []
                for step in range(run.steps):
                    sync()
                    start = time.perf_counter()
                    driver(step)
                    sync()
                    times.append(time.perf_counter() - start)
                    progress()
                seconds.append(times)
            finally:
                driver.close()
    return dict(seconds=seconds, peak_bytes=memory.peak(), before_bytes=memory.before,
                device=torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
                dtype=str(dtype).replace("torch.", ""), threads=torch.get_num_threads())


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return "CPU " + next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU"


def worker_main() -> None:
    """Entry of the subprocess: `job.json` in argv[1], result written to argv[2]; one line per call on stdout."""
    job = json.loads(Path(sys.argv[1]).read_text())
    result = run_job(Config(**job["config"]), job["variant"], lambda: print("call", flush=True))
    Path(sys.argv[2]).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------
# The official implementation (hidiffusion/official.py loads hidiffusion==0.1.10 under another name)

def official_unavailable() -> Optional[str]:
    """None when the official variant can run, else why not."""
    try:
        from . import official
        official.load()
        import diffusers  # noqa: F401
    except Exception as error:       # noqa: BLE001 - any failure to load it is a reason to skip
        return f"official HiDiffusion not loadable: {type(error).__name__}: {error}"
    return None


# ----------------------------------------------------------------------------------------------
# The parent: schedule jobs, aggregate, report

def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, unit="call", desc="UNet calls", disable=not enabled, file=sys.stderr)


def _spawn(config: Config, variant: str, bar) -> dict:
    """Run one job in a fresh Python process; return its result or {"error": ...}."""
    with tempfile.TemporaryDirectory(prefix="hidiffusion-bench-") as tmp:
        job, out, log = Path(tmp, "job.json"), Path(tmp, "result.json"), Path(tmp, "stderr.txt")
        job.write_text(json.dumps(dict(config=asdict(config), variant=variant)))
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-c", "from hidiffusion.bench import worker_main; worker_main()", str(job), str(out)]
        with open(log, "w") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
            for line in process.stdout:
                if line.strip() == "call":
                    bar.update(1)
            process.wait()
        if process.returncode != 0 or not out.exists():
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            return {"error": lines[-1] if lines else f"worker exited with {process.returncode}"}
        return json.loads(out.read_text())


def _median(values):
    return statistics.median(values) if values else None


def benchmark(config: Config, progress: bool = True) -> dict:
    """Run every variant `config.repeats` times, interleaved; return the report (a JSON-able dict)."""
    from .unets import build_unet
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
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
        entry = dict(name=variant, description=VARIANTS[variant], status="ok", reason=None,
                     phases=phases(variant, config, architecture), repeats=[])
        if variant == "official":
            entry["reason"] = official_unavailable()
            entry["status"] = "skipped" if entry["reason"] else "ok"
        if entry["status"] == "ok":
            count_flops(config, entry["phases"], variant)
        entries[variant] = entry
        report["variants"].append(entry)

    runnable = [v for v in config.variants if entries[v]["status"] == "ok"]
    calls = sum(sum(p["steps"] for p in entries[v]["phases"]) for v in runnable) * config.repeats
    bar = _progress_bar(calls, progress)
    try:
        for repeat in range(config.repeats):
            for variant in runnable:
                entry = entries[variant]
                if entry["status"] != "ok":
                    continue
                bar.set_postfix_str(f"{variant} {repeat + 1}/{config.repeats}")
                result = _spawn(config, variant, bar)
                if "error" in result:
                    entry.update(status="failed", reason=result["error"])
                    continue
                entry["repeats"].append(result)
    finally:
        bar.close()
    _summarise(report, entries)
    return report


def _summarise(report: dict, entries: dict) -> None:
    """Medians, ratios to vanilla, ideal ratios from FLOPs and efficiency, in place."""
    for entry in entries.values():
        if entry["status"] != "ok":
            continue
        first = entry["repeats"][0]
        report.setdefault("device", first["device"])
        report.setdefault("dtype", first["dtype"])
        report.setdefault("threads", first["threads"])
        for phase in entry["phases"]:
            phase["seconds"] = _median([sum(result["seconds"][phase["pass_index"]][step]
                                            for step in phase["step_indices"]) for result in entry["repeats"]])
            phase["seconds_per_step"] = phase["seconds"] / phase["steps"]
        entry["unet_seconds"] = _median([sum(map(sum, r["seconds"])) for r in entry["repeats"]])
        entry["flops"] = sum(p["flops_per_step"] * p["steps"] for p in entry["phases"])
        entry["peak_bytes"] = _median([r["peak_bytes"] for r in entry["repeats"]])
        entry["activation_bytes"] = _median([r["peak_bytes"] - r["before_bytes"] for r in entry["repeats"]])
    vanilla = entries.get("vanilla")
    for entry in entries.values():
        if entry["status"] != "ok" or not vanilla or vanilla["status"] != "ok":
            continue
        entry["ratio"] = entry["unet_seconds"] / vanilla["unet_seconds"]
        entry["ideal_ratio"] = entry["flops"] / vanilla["flops"]
        entry["efficiency"] = entry["ideal_ratio"] / entry["ratio"]
        entry["activation_ratio"] = entry["activation_bytes"] / max(vanilla["activation_bytes"], 1)
    report["targets"] = _targets(entries)


def _ok(entries, name):
    entry = entries.get(name)
    return entry if entry and entry["status"] == "ok" and "ratio" in entry else None


def _targets(entries: dict) -> dict:
    """The issue's targets, as numbers (None where a variant is missing)."""
    hidiffusion, official = _ok(entries, "hidiffusion"), _ok(entries, "official")
    disabled, hires = _ok(entries, "disabled"), _ok(entries, "hires-fix")
    return {
        "hidiffusion_efficiency": hidiffusion and hidiffusion["efficiency"],
        "ours_over_official": hidiffusion and official and hidiffusion["unet_seconds"] / official["unet_seconds"],
        "disabled_overhead": disabled and disabled["ratio"] - 1,
        "activation_ratio": hidiffusion and hidiffusion["activation_ratio"],
        "hidiffusion_over_hires_fix": hidiffusion and hires and hidiffusion["unet_seconds"] / hires["unet_seconds"],
    }


# ----------------------------------------------------------------------------------------------
# Output: table, JSON, plot

def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """A Markdown table, readable in a terminal and pasteable into a README."""
    config = report["config"]
    lines = [f"HiDiffusion bench, {report['date']}: {report['model']} {config['width']}x{config['height']}, "
             f"batch {config['batch']}, {config['steps']} steps, {report.get('device', '?')} "
             f"{report.get('dtype', '')} ({report.get('threads', '?')} threads), torch {report['torch']}, "
             f"median of {config['repeats']}",
             f"plan: {report['plan']}",
             f"command: {report['command']}",
             "",
             "| variant | UNet s | ratio | ideal (FLOPs) | efficiency | peak activation MiB | activation ratio "
             "| s/step by phase |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for entry in report["variants"]:
        if entry["status"] != "ok":
            lines.append(f"| {entry['name']} | {entry['status']}: {entry['reason']} |||||||")
            continue
        steps = ", ".join(f"{p['name']} {p['width']}x{p['height']} {p['seconds_per_step']:.3g}"
                          f" (×{p['steps']})" for p in entry["phases"])
        lines.append(
            f"| {entry['name']} | {entry['unet_seconds']:.3g} | {_fmt(entry.get('ratio'), '.3f')} "
            f"| {_fmt(entry.get('ideal_ratio'), '.3f')} | {_fmt(entry.get('efficiency'), '.0%')} "
            f"| {entry['activation_bytes'] / MIB:.0f} | {_fmt(entry.get('activation_ratio'), '.2f')} | {steps} |")
    targets = report["targets"]
    lines += ["",
              "targets: HiDiffusion efficiency " + _fmt(targets["hidiffusion_efficiency"], ".0%") + " (>= 90 %); "
              "ours/official " + _fmt(targets["ours_over_official"], ".3f") + " (<= 0.95); "
              "disabled overhead " + _fmt(targets["disabled_overhead"], "+.1%") + " (<= 1 %); "
              "activation memory " + _fmt(targets["activation_ratio"], ".2f") + "x vanilla (<= 0.6 at 2048 px); "
              "HiDiffusion/Hires. fix " + _fmt(targets["hidiffusion_over_hires_fix"], ".3f") + " (< 1)"]
    return "\n".join(lines)


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
                         help="runs per variant, interleaved across variants; medians are reported "
                              "(default %(default)s)")
    measure.add_argument("--warmup", type=int, default=defaults.warmup,
                         help="untimed UNet calls before each run, in its first phase (default %(default)s)")
    measure.add_argument("--seed", type=int, default=defaults.seed,
                         help="seed of the weights, inputs and window shifts (default %(default)s)")
    measure.add_argument("--device", default=defaults.device,
                         help="auto (CUDA with fp16 when available, else CPU fp32), cpu, cuda or cuda:N "
                              "(default %(default)s)")
    measure.add_argument("--threads", type=int,
                         help="CPU threads per run (default: torch's choice, usually one per core)")
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
