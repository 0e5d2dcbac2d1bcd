"""What each variant runs: its sampling passes, their phases, and the driver that makes each UNet call
with the variant's patch switched as the engine would (shared by the measured run and the FLOP count)."""
import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from hidiffusion import Settings, apply, detect, resolve


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
        default, args = Config(), ["python -m testbed bench"]
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


def model_spec(config: Config) -> tuple:
    """(model, overrides) of the UNet to build: from the checkpoint's header or the chosen model."""
    from ..unets import checkpoint_config
    if config.checkpoint:
        return checkpoint_config(config.checkpoint)
    return config.model, {}


def attention_context(model: str):
    """The UNet as the webui runs it: sdp attention for ldm (its stock einsum attention would not fit at
    1024 px), and skips of odd sizes resized before their concatenation (else vanilla fails at 1080 px)."""
    from ..unets import sdp_attention, webui_skip_concat
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
        from .. import official
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
