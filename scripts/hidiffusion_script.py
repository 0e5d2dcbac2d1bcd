"""HiDiffusion in the AUTOMATIC1111 webui: the accordion, the sampling lifecycle, infotext, XYZ axes, API args.

Glue only; the method is the `hidiffusion` package beside this folder. Per sampling pass (first pass,
hires pass, img2img) the pass's size and the UNet loaded at that moment give a Plan; the patch is applied
at the pass's first denoiser call, driven on every call, and removed when the pass ends or no longer needs
it. Stale patches (an exception skips `postprocess`) are healed at the next run and on script unload.
"""
import copy
import dataclasses
import functools
import sys
import weakref
from typing import Any, Callable, Optional

import gradio as gr
from torch import nn

import hidiffusion  # imported at load time: the extension folder is on sys.path only now
from modules import script_callbacks, scripts, shared
from modules.ui_components import FormRow, InputAccordion

TITLE = "HiDiffusion"
JOB = "hidiffusion_job"            # attribute of `p` holding the running Job
LATENT_SCALE = 8
PRESETS = {"Auto": "auto", "SD1.x": "sd1", "SD2.x": "sd2", "SDXL": "sdxl", "SDXL-Turbo": "sdxl-turbo"}
AGGRESSIVE = {"Auto": None, "On": True, "Off": False}
PASSES = ("Both", "First pass", "Hires pass")


# --- settings: one declaration, in the order of `ui()`'s components = the positional API args ----------

def _bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "on", "off", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "on", "yes", "1")
    raise ValueError(f"expected true or false, got {value!r}")


def _ratio(value):
    """A number in [0, 1], or None for Auto."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number from 0 to 1 or 'auto', got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number from 0 to 1 or 'auto', got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"must be between 0 and 1, got {value!r}")
    return number


def _choice(*choices, aliases=None):
    lookup = {c.lower(): c for c in choices}
    lookup.update(aliases or {})

    def parse(value):
        if isinstance(value, str) and value.strip().lower() in lookup:
            return lookup[value.strip().lower()]
        raise ValueError(f"expected one of {', '.join(choices)}; got {value!r}")
    return parse


@dataclasses.dataclass(frozen=True)
class Option:
    name: str            # positional position's name, dict key, XYZ attribute `p.hidiffusion_<name>`
    label: str           # UI label, unique in this script (the ui-config key)
    default: Any
    parse: Callable      # API / XYZ value -> setting; raises ValueError with a readable message
    tooltip: str


OPTIONS = (
    Option("enable", TITLE, False, _bool, "Generate above the model's native resolution without duplicated "
           "objects (RAU-Net) and faster (MSW-MSA)."),
    Option("raunet", "RAU-Net", True, _bool, "Resolution-aware U-Net: the deep levels run at the native "
           "resolution during the first steps, so the layout is composed once."),
    Option("window_attention", "MSW-MSA", True, _bool, "Shifted-window self-attention in the top blocks: "
           "faster at high resolution, at every step."),
    Option("preset", "Model preset", "Auto", _choice(*PRESETS, aliases={v: k for k, v in PRESETS.items()}),
           "Auto recognises SD1.x / SD2.x / SDXL from the UNet's structure. Choose SDXL-Turbo for few-step "
           "SDXL models (RAU-Net without the strided convolution, T1 0.5)."),
    Option("auto_timing", "Auto T1/T2", True, _bool, "Take T1 and T2 from the official table for the model "
           "and image size (shown below). Off: use the sliders."),
    Option("t1", "T1", 0.4, _ratio, "Fraction of the steps with the main RAU-Net switch on (SD1.x/SD2.x: "
           "the stride-4 downsampler; SDXL: the pooled level-1 block)."),
    Option("t2", "T2", 0.0, _ratio, "Fraction of the steps with the second switch on (SD1.x/SD2.x: the "
           "pooled level-1 block; SDXL: the stride-4 downsampler). Never above T1."),
    Option("aggressive", "Aggressive", "Auto", _choice(*AGGRESSIVE), "SDXL only: the stride-4 downsampler "
           "for the first 16% of the steps, then pooling until T1 (official for SDXL below 4096 px)."),
    Option("passes", "Apply to", "Both", _choice(*PASSES, aliases={"first": "First pass", "hires": "Hires pass"}),
           "Which sampling passes get HiDiffusion. img2img has only a first pass."),
    Option("native_guard", "Only above native resolution", True, _bool, "Skip a pass whose image fits "
           "within the model's native resolution (SD1.x 512, SDXL 1024): HiDiffusion is for larger images."),
    Option("rau_upsample", "RAU upsampling", hidiffusion.RAU_UPSAMPLE_MODES[0],
           _choice(*hidiffusion.RAU_UPSAMPLE_MODES), "How the resolution-aware upsampler resizes before its "
           "convolution: nearest (official) or bicubic."),
    Option("window_shift", "Window shift", hidiffusion.WINDOW_SHIFT_MODES[0],
           _choice(*hidiffusion.WINDOW_SHIFT_MODES), "MSW-MSA window shift per step: random (seeded from the "
           "image seed), rotate (step mod 4) or none."),
)
DEFAULTS = {o.name: o.default for o in OPTIONS}
DICT_KEYS = [o.name for o in OPTIONS if o.name != "auto_timing"]   # dict form: "t1": "auto" | number

# Infotext keys (webui key syntax: letters, digits, spaces, "-", "/").
KEY = {"parts": TITLE, "preset": f"{TITLE} preset", "t1": f"{TITLE} T1", "t2": f"{TITLE} T2",
       "aggressive": f"{TITLE} aggressive", "auto": f"{TITLE} auto", "passes": f"{TITLE} passes",
       "native_guard": f"{TITLE} native guard", "rau_upsample": f"{TITLE} RAU upsample",
       "window_shift": f"{TITLE} window shift", "note": f"{TITLE} note", "error": f"{TITLE} error"}


def read_args(p, args) -> dict:
    """The settings of this run: positional args or one dict, then XYZ overrides. Raises ValueError.

    T1/T2 come out as a number or None (Auto); "auto_timing" is only the UI's switch for both. Bad values
    of a run that is plainly off are ignored (a disabled run stays untouched); unknown dict keys never are,
    so that a misspelt "enable" is reported instead of silently doing nothing.
    """
    problems = {}
    if args and isinstance(args[0], dict):
        supplied = dict(args[0])
        unknown = sorted(set(supplied) - set(DICT_KEYS))
        if unknown:
            problems[None] = f"unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(DICT_KEYS)}"
        values = _parsed(dict(DEFAULTS, auto_timing=False, t1=None, t2=None),
                         {k: v for k, v in supplied.items() if k in DICT_KEYS}, problems)
    else:
        if len(args) > len(OPTIONS) and args[len(OPTIONS)] not in ("", None):
            problems[None] = f"too many positional args: {TITLE} takes {len(OPTIONS)}, in the README's order"
        values = _parsed(dict(DEFAULTS), dict(zip([o.name for o in OPTIONS], args)), problems)
    values = normalize(values)
    overrides = {o.name: getattr(p, f"hidiffusion_{o.name}") for o in OPTIONS if hasattr(p, f"hidiffusion_{o.name}")}
    values = _parsed(values, overrides, problems)
    if problems and (values["enable"] or None in problems or "enable" in problems):
        raise ValueError("; ".join(f"{name}: {text}" if name else text for name, text in problems.items()))
    return values


def _parsed(values, supplied, problems):
    for name, value in supplied.items():
        try:
            values[name] = next(o for o in OPTIONS if o.name == name).parse(value)
        except ValueError as e:
            problems[name] = str(e)
    return values


def normalize(values):
    """Fold the UI's "Auto T1/T2" switch into T1/T2 = None."""
    if values["auto_timing"]:
        values = dict(values, t1=None, t2=None)
    return dict(values, auto_timing=False)


def engine_settings(values: dict) -> hidiffusion.Settings:
    settings = hidiffusion.Settings(
        raunet=values["raunet"], window_attention=values["window_attention"], preset=PRESETS[values["preset"]],
        t1=values["t1"], t2=values["t2"],
        aggressive=AGGRESSIVE[values["aggressive"]], rau_upsample=values["rau_upsample"],
        window_shift=values["window_shift"])
    settings.validate()
    return settings


# --- one generation: a Job on `p`, one Pass per sampling pass ------------------------------------------

def current_unet(p):
    model = shared.sd_model if shared.sd_model is not None else p.sd_model   # the refiner swaps shared.sd_model
    return model.model.diffusion_model


def noise_levels(p, denoiser):
    """The noise level at each step of the pass being sampled, highest first: sigmas for k-diffusion
    samplers, timesteps for DDIM/PLMS/UniPC. Taken from the sampler's own schedule functions with the
    arguments the webui passes them, so every sampler, scheduler and img2img strength is covered;
    None for a sampler that has neither."""
    from modules import processing, sd_samplers_common
    sampler = getattr(denoiser, "sampler", None)
    hires = getattr(p, "is_hr_pass", False)
    steps = (p.hr_second_pass_steps or p.steps) if hires else p.steps
    img2img = hires or isinstance(p, processing.StableDiffusionProcessingImg2Img)
    if img2img:
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps if hires else None)
    if hasattr(sampler, "get_sigmas"):          # one model call per sigma, except the final 0
        sigmas = sampler.get_sigmas(p, steps)
        return (sigmas[steps - t_enc - 1:] if img2img else sigmas)[:-1].tolist()
    if hasattr(sampler, "get_timesteps"):       # the loop runs from the last timestep down to the second
        timesteps = sampler.get_timesteps(p, steps)
        return (timesteps[:t_enc] if img2img else timesteps)[1:].flip(0).tolist()
    return None


def snapped_size(width, height):
    """The size the webui samples for a requested width and height (its latent is a size // 8)."""
    return tuple(max(LATENT_SCALE, int(v) // LATENT_SCALE * LATENT_SCALE) for v in (width, height))


def pixel_size(latent):
    return latent.shape[-1] * LATENT_SCALE, latent.shape[-2] * LATENT_SCALE


class Pass:
    """One sampling pass (first pass, hires pass, img2img) and how far its sampler has come."""

    def __init__(self, kind, denoiser, width, height, levels):
        self.kind, self.denoiser, self.width, self.height = kind, denoiser, width, height
        self.levels = levels        # noise level of each step, highest first (None: count calls instead)
        self.step = 0               # the furthest step reached: Restart and PLMS revisit higher noise
        self.unet = None            # weakref to the UNet this pass saw last
        self.patch = None
        self.lllite = []            # ControlNet-LLLite modules whose conditioning follows the phase
        self.finished = False

    def advance(self, params):
        """(step, steps) of this denoiser call. A call at noise level s belongs to the last step whose
        level is >= s: one-call-per-step samplers get their loop index, and every sampler (second order,
        Restart, DPM adaptive) switches at the same noise level, `step < int(steps * T1)` as officially."""
        if self.levels:
            level = float(params.sigma.flatten()[0]) * (1 - 1e-5)      # float32 round-off of the same value
            step, total = sum(1 for x in self.levels if x >= level) - 1, len(self.levels)
        else:
            denoiser = params.denoiser
            step, total = denoiser.step * denoiser.steps // max(denoiser.total_steps, 1), denoiser.steps
        self.step = min(max(self.step, step), total - 1)
        return self.step, total


class Job:
    def __init__(self, p, values, settings):
        self.values, self.settings = values, settings
        self.current: Optional[Pass] = None
        self.notes = {}
        self.printed = set()
        self.p = weakref.ref(p)

    def end_pass(self):
        if self.current is not None:
            self.remove_patch(self.current)
        self.current = None

    def remove_patch(self, run):
        """Take the patch off this pass's UNet, saying which windows the host kept global and why."""
        if run.patch is None:
            return
        windows = run.patch.window_attention
        for reason, blocks in (windows.left_global.items() if windows is not None else ()):
            self.note(run, f"MSW-MSA global in {','.join(blocks)}: {reason}")
        run.patch.remove()
        run.patch = None

    def denoise(self, p, params):
        kind = "hires pass" if getattr(p, "is_hr_pass", False) else "first pass"
        if self.current is None or self.current.kind != kind or self.current.denoiser is not params.denoiser:
            self.end_pass()
            self.current = Pass(kind, params.denoiser, *pixel_size(params.x), noise_levels(p, params.denoiser))
        run = self.current
        if run.finished:
            return
        unet = current_unet(p)
        if run.unet is None or run.unet() is not unet:       # first call of the pass, or the refiner swapped
            self.remove_patch(run)
            run.unet = weakref.ref(unet)
            run.patch = self.attach(p, run, unet)
            if run.patch is None:
                run.finished = True
                return
        before = run.patch.phase
        phase = run.patch.set_step(*run.advance(params))
        if phase != before:
            for module in run.lllite:       # its cached conditioning has the previous phase's token count
                module.cond_emb = None
        if not (phase.rad or phase.ca or self.settings.window_attention):   # RAU-Net is over for this pass
            self.remove_patch(run)
            run.finished = True

    def attach(self, p, run, unet):
        """Resolve and apply for this pass and UNet, or return None and say why not."""
        wanted = self.values["passes"]
        if wanted != "Both" and wanted.lower() != run.kind:
            return self.skip(run, f"not applied: set to {wanted.lower()} only")
        control = controlnet_units(p, unet)
        try:
            architecture = hidiffusion.detect(unet)
            plan = hidiffusion.resolve(architecture, self.settings, run.width, run.height)
            conflict = raunet_conflict(unet, plan)
            if conflict and plan.settings.raunet:
                self.note(run, f"RAU-Net off: {conflict}")
                plan = hidiffusion.resolve(architecture, dataclasses.replace(self.settings, raunet=False),
                                           run.width, run.height)
                if not plan.settings.window_attention:
                    return self.skip(run, f"not applied: RAU-Net off ({conflict}) and MSW-MSA off")
        except ValueError as e:    # UnsupportedModel, or a preset that does not fit this UNet
            return self.skip(run, f"not applied: {e}")
        if self.values["native_guard"] and max(run.width, run.height) <= plan.native_resolution:
            return self.skip(run, f"not applied: {run.width}x{run.height} is not above the native "
                                  f"{plan.native_resolution} px")
        started = shared.state.time_start        # a new task (the next generation, training) starts anew
        patch = hidiffusion.apply(unet, plan, seed=image_seeds(p),
                                  guard=lambda: shared.state.time_start == started)
        run.lllite = fit_extensions(patch, control, unet, plan)
        for adjustment in plan.notes:
            self.note(run, adjustment)
        self.write_plan(p, plan)
        self.say(f"{run.kind} {run.width}x{run.height}: {plan.describe()}")
        return patch

    def skip(self, run, reason):
        self.note(run, reason)
        self.say(f"{run.kind} {run.width}x{run.height}: {reason}")
        return None

    def note(self, run, text):
        self.notes[f"{run.kind} {run.width}x{run.height}: {text}"] = None
        p = self.p()
        if p is not None:
            p.extra_generation_params[KEY["note"]] = "; ".join(self.notes)

    def say(self, line):
        if line not in self.printed:   # once per job, not once per batch
            self.printed.add(line)
            print(f"{TITLE}: {line}")

    def write_plan(self, p, plan):
        params = p.extra_generation_params
        params[KEY["preset"]] = preset_label(plan.preset)
        if plan.settings.raunet:
            params[KEY["t1"]], params[KEY["t2"]], params[KEY["aggressive"]] = plan.t1, plan.t2, plan.aggressive
        else:
            for name in ("t1", "t2", "aggressive"):
                params.pop(KEY[name], None)


def preset_label(preset):
    return next(label for label, key in PRESETS.items() if key == preset)


def image_seeds(p):
    """The seed of each image of the batch being sampled: each image draws its own window shifts, so it
    can be made again alone from its seed, as the webui promises."""
    seeds = getattr(p, "seeds", None) or [getattr(p, "seed", 0)]
    return [int(seed) for seed in seeds]


# --- other extensions whose work meets RAU-Net's smaller features or MSW-MSA's windows -----------------

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


def write_request(p, values):
    """The infotext of the choices; the resolved preset/T1/T2/aggressive are added when a pass applies."""
    params = p.extra_generation_params
    parts = [name for name, on in (("RAU-Net", values["raunet"]), ("MSW-MSA", values["window_attention"])) if on]
    params[KEY["parts"]] = "+".join(parts)
    auto = [name for name, is_auto in (("preset", values["preset"] == "Auto"),
                                       ("T1", values["t1"] is None), ("T2", values["t2"] is None),
                                       ("aggressive", values["aggressive"] == "Auto")) if is_auto]
    if auto:
        params[KEY["auto"]] = " ".join(auto)
    params[KEY["passes"]] = values["passes"]
    if values["preset"] != "Auto":         # explicit choices, also when no pass applies (write_plan refines)
        params[KEY["preset"]] = values["preset"]
    if values["raunet"]:
        for name in ("t1", "t2"):
            if values[name] is not None:
                params[KEY[name]] = values[name]
        if values["aggressive"] != "Auto":
            params[KEY["aggressive"]] = AGGRESSIVE[values["aggressive"]]
    for name in ("native_guard", "rau_upsample", "window_shift"):
        if values[name] != DEFAULTS[name]:
            params[KEY[name]] = values[name]


def clear_infotext(p):
    """XYZ cells share one extra_generation_params: start every run without our keys."""
    for key in KEY.values():
        p.extra_generation_params.pop(key, None)


def fail(p, message):
    print(f"{TITLE}: {message}; generating without HiDiffusion")
    p.extra_generation_params[KEY["error"]] = message


# --- what "Auto" resolves to, for the UI ----------------------------------------------------------------

def hires_size(width, height, scale, resize_x, resize_y):
    if resize_x and resize_y:
        return int(resize_x), int(resize_y)
    if resize_x:
        return int(resize_x), int(height * resize_x / width)
    if resize_y:
        return int(width * resize_y / height), int(resize_y)
    return int(width * scale), int(height * scale)


def describe_auto(values, sizes):
    """One HTML line per pass (the resolved preset, T1, T2 and aggressive at its size), and the (T1, T2)
    the sliders show under Auto: the last pass that applies, as the infotext records; if none applies,
    the last that resolves; None if none does."""
    model = shared.sd_model
    if model is None or not hasattr(getattr(model, "model", None), "diffusion_model"):
        return "Auto values appear once a model is loaded.", None
    try:
        architecture = hidiffusion.detect(model.model.diffusion_model)
        settings = engine_settings(normalize(values))
    except ValueError as e:     # UnsupportedModel is a ValueError
        return f"Not available: {e}", None
    lines, plans = [], []
    for kind, (width, height) in sizes:
        if not (width and height):
            lines.append(f"{kind}: no source image yet")
            continue
        width, height = snapped_size(width, height)
        try:
            plan = hidiffusion.resolve(architecture, settings, width, height)
        except ValueError as e:
            lines.append(f"{kind} {width}x{height}: {e}")
            continue
        applies = False
        if values["passes"] != "Both" and values["passes"].lower() != kind:
            lines.append(f"{kind} {width}x{height}: not applied")
        elif values["native_guard"] and max(width, height) <= plan.native_resolution:
            lines.append(f"{kind} {width}x{height}: not applied (not above native {plan.native_resolution} px)")
        else:
            applies = True
            timing = f"T1 {plan.t1:g}, T2 {plan.t2:g}" + (", aggressive" if plan.aggressive else "")
            parts = [timing] if settings.raunet else []
            parts += ["MSW-MSA"] if settings.window_attention else []
            summary = " · ".join([preset_label(plan.preset)] + parts)
            lines.append(f"{kind} {width}x{height}: {summary}")
        plans.append((plan, applies))
    shown = [plan for plan, applies in plans if applies] or [plan for plan, _ in plans]
    timing = (shown[-1].t1, shown[-1].t2) if shown else None
    return f"<span title='loaded model: {architecture}'>" + "<br>".join(lines) + "</span>", timing


class HiDiffusionScript(scripts.Script):
    # The webui's controls that decide each pass's size, by elem_id: inputs of the Auto display. img2img's
    # "Scale" is that of its "Resize by" tab (see javascript/hidiffusion.js).
    SIZE_IDS = {"txt2img": ("txt2img_width", "txt2img_height", "txt2img_hr-checkbox", "txt2img_hr_scale",
                            "txt2img_hr_resize_x", "txt2img_hr_resize_y"),
                "img2img": ("img2img_width", "img2img_height", "img2img_scale")}
    # img2img's other moments to refresh: its Resize to / Resize by tabs are chosen, and the hidden button
    # its page clicks once a new source image shows
    SIGNAL_IDS = {"txt2img": (), "img2img": ("img2img_tab_resize_to", "img2img_tab_resize_by",
                                             "img2img_update_resize_to")}

    section = "accordions"   # beside Hires. fix and Refiner
    create_group = False     # a direct child of that row, which gives an open accordion the row's width

    def __init__(self):
        super().__init__()
        self.size_components = {}
        self.display = None     # (line, our controls by name) from the page's ui()
        self.refresh = None     # refresh(event): the Auto display on that event; set once it is wired

    def title(self):
        return TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_component(self, component, **kwargs):
        tab = "img2img" if self.is_img2img else "txt2img"
        if kwargs.get("elem_id") in self.SIZE_IDS[tab] + self.SIGNAL_IDS[tab]:
            self.size_components[kwargs["elem_id"]] = component
            self.wire()

    def ui(self, is_img2img):
        c = {}
        with InputAccordion(False, label=TITLE, elem_id=self.elem_id("enable")) as c["enable"]:
            # The webui puts `tooltip=` on the InputAccordion's hidden checkbox; users hover the header.
            c["enable"].accordion.webui_tooltip = OPTIONS[0].tooltip
            line = gr.HTML(value="Auto values appear once the page has loaded.", elem_id=self.elem_id("auto_info"))
            line.do_not_save_to_config = True
            with FormRow(variant="compact"):
                for name in ("raunet", "window_attention", "native_guard"):
                    c[name] = self.control(name, gr.Checkbox, min_width=0, scale=2 if name == "native_guard" else 1)
            with FormRow(variant="compact"):
                c["auto_timing"] = self.control("auto_timing", gr.Checkbox, min_width=0)
                for name in ("t1", "t2"):   # locked while Auto T1/T2 shows its values in them
                    c[name] = self.control(name, gr.Slider, minimum=0.0, maximum=1.0, step=0.05, min_width=0,
                                           scale=2, interactive=not DEFAULTS["auto_timing"])
                c["aggressive"] = self.control("aggressive", gr.Dropdown, choices=list(AGGRESSIVE), min_width=0,
                                               scale=2)
            with FormRow(variant="compact"):
                for name, choices in (("preset", PRESETS), ("passes", PASSES),
                                      ("rau_upsample", hidiffusion.RAU_UPSAMPLE_MODES),
                                      ("window_shift", hidiffusion.WINDOW_SHIFT_MODES)):
                    c[name] = self.control(name, gr.Dropdown, choices=list(choices), min_width=0)
        # The webui drops positional API args beyond a script's controls without a word; this hidden last
        # control catches the first extra one, so a request with too many args is reported.
        overflow = gr.Textbox(value="", visible=False, label="Extra args (must stay empty)",
                              elem_id=self.elem_id("extra_args"))
        overflow.do_not_save_to_config = True
        controls = [c[o.name] for o in OPTIONS]
        self.display = (line, c)
        self.wire()

        key = lambda name, d, default: d.get(KEY[name], default)           # noqa: E731
        marker = lambda d: d.get(KEY["auto"], "").split()                   # noqa: E731
        parts = lambda d: d.get(KEY["parts"], "RAU-Net+MSW-MSA").split("+")  # noqa: E731
        self.infotext_fields = [
            (c["enable"], lambda d: KEY["parts"] in d),
            (c["raunet"], lambda d: "RAU-Net" in parts(d)),
            (c["window_attention"], lambda d: "MSW-MSA" in parts(d)),
            (c["preset"], lambda d: "Auto" if "preset" in marker(d) else key("preset", d, "Auto")),
            (c["auto_timing"], lambda d: KEY["t1"] not in d or "T1" in marker(d)),
            (c["t1"], lambda d: float(key("t1", d, DEFAULTS["t1"]))),
            (c["t2"], lambda d: float(key("t2", d, DEFAULTS["t2"]))),
            (c["aggressive"], lambda d: "Auto" if KEY["aggressive"] not in d or "aggressive" in marker(d)
             else ("On" if d[KEY["aggressive"]] == "True" else "Off")),
            (c["passes"], lambda d: key("passes", d, DEFAULTS["passes"])),
            (c["native_guard"], lambda d: key("native_guard", d, "True") != "False"),
            (c["rau_upsample"], lambda d: key("rau_upsample", d, DEFAULTS["rau_upsample"])),
            (c["window_shift"], lambda d: key("window_shift", d, DEFAULTS["window_shift"])),
        ]
        # "Send to img2img/inpaint" copies only fields named by a string listed in paste_field_names, while
        # pasting an infotext must also switch HiDiffusion off when the keys are absent, which only a
        # callable can. So each control is listed twice: under a name that no infotext contains (a paste
        # leaves it alone), for Send to, and with its callable, for pasting.
        send_to = [(c[o.name], f"{TITLE}/{o.name}") for o in OPTIONS]
        self.infotext_fields = send_to + self.infotext_fields
        self.paste_field_names = [name for _, name in send_to]
        return controls + [overflow]

    def control(self, name, component, **kwargs):
        option = next(o for o in OPTIONS if o.name == name)
        return component(value=option.default, label=option.label, tooltip=option.tooltip,
                         elem_id=self.elem_id(name), **kwargs)

    def wire(self):
        """Connect the Auto display once the page's controls, ours and the webui's size controls, all exist.
        The webui builds the accordions row before the width/height sliders by default and after them if
        the user reorders the page in Settings, so this runs from ui() and from after_component, and acts
        once. The API's own later calls of ui() (in a throw-away Blocks) find it done."""
        tab = "img2img" if self.is_img2img else "txt2img"
        if self.refresh is not None or self.display is None or \
                any(i not in self.size_components for i in self.SIZE_IDS[tab] + self.SIGNAL_IDS[tab]):
            return
        line, c = self.display
        sizes, controls = [self.size_components[i] for i in self.SIZE_IDS[tab]], [c[o.name] for o in OPTIONS]

        def refresh(event):
            event(fn=functools.partial(self.auto_display, self.is_img2img), inputs=sizes + controls,
                  outputs=[line, c["t1"], c["t2"]], _js="hidiffusionImg2imgSize" if self.is_img2img else None,
                  show_progress=False)

        self.refresh = refresh
        # Sliders on release, as the webui's own hires preview: change fires at every drag step, and gradio
        # drops a trigger while the previous one is pending, so the last value of a drag could be lost.
        for component in sizes + controls:
            refresh(component.release if isinstance(component, gr.Slider) else component.change)
        for signal in self.SIGNAL_IDS[tab]:
            component = self.size_components[signal]
            refresh(component.click if isinstance(component, gr.Button) else component.select)
        refresh(gr.context.Context.root_block.load)   # ui-config may have changed any default

    @staticmethod
    def auto_display(is_img2img, *values):
        """The Auto line and the T1/T2 sliders, from the webui's size controls plus ours: while Auto T1/T2 is
        on, the sliders show the values the next image will use and cannot be dragged."""
        count = len(HiDiffusionScript.SIZE_IDS["img2img" if is_img2img else "txt2img"])
        size, ours = values[:count], dict(zip([o.name for o in OPTIONS], values[count:]))
        if is_img2img:      # scale is 1 in the Resize to tab
            passes = [("first pass", (int(size[0] * size[2]), int(size[1] * size[2])))]
        else:
            passes = [("first pass", (size[0], size[1]))]
            if size[2]:
                passes.append(("hires pass", hires_size(*size[:2], *size[3:])))
        line, timing = describe_auto(ours, passes)
        if not ours["auto_timing"]:
            return line, gr.update(interactive=True), gr.update(interactive=True)
        if timing is None:
            return line, gr.update(interactive=False), gr.update(interactive=False)
        return line, *(gr.update(value=value, interactive=False) for value in timing)

    # --- processing hooks, in the webui's call order ---

    def before_process(self, p, *args):
        hidiffusion.remove_all()     # heals a run that died before postprocess

    def process(self, p, *args):
        clear_infotext(p)
        setattr(p, JOB, None)
        try:
            values = read_args(p, args)
            if not values["enable"]:
                return
            settings = engine_settings(values)
        except ValueError as e:
            return fail(p, f"invalid settings: {e}")
        if hasattr(p.sd_model, "forge_objects"):
            return fail(p, "WebUI Forge is not supported yet (this extension patches the A1111 ldm/sgm UNet)")
        if not (settings.raunet or settings.window_attention):
            return fail(p, "RAU-Net and MSW-MSA are both off")
        write_request(p, values)
        setattr(p, JOB, Job(p, values, settings))

    def process_before_every_sampling(self, p, *args, **kwargs):
        self._end_pass(p)

    def before_hr(self, p, *args):
        self._end_pass(p)

    def post_sample(self, p, ps, *args):
        self._end_pass(p)

    def postprocess(self, p, processed, *args):
        self._end_pass(p)
        setattr(p, JOB, None)
        hidiffusion.remove_all()

    @staticmethod
    def _end_pass(p):
        job = getattr(p, JOB, None)
        if job is not None:
            job.end_pass()


def on_cfg_denoiser(params):
    p = getattr(params.denoiser, "p", None)
    job = getattr(p, JOB, None)
    if job is None:     # sampling without our job (also without scripts: training previews): heal first
        hidiffusion.remove_all()
        return
    try:
        job.denoise(p, params)
    except Exception as e:    # never break sampling: restore the UNet and go on without HiDiffusion
        job.end_pass()
        setattr(p, JOB, None)
        hidiffusion.remove_all()
        fail(p, f"{type(e).__name__}: {e}")


# --- XYZ grid --------------------------------------------------------------------------------------------

XYZ_AXES = (("enable", None), ("raunet", "RAU-Net"), ("window_attention", "MSW-MSA"), ("preset", "preset"),
            ("t1", "T1"), ("t2", "T2"), ("aggressive", "aggressive"), ("passes", "passes"))


def add_axis_options():
    """Add our axes to the XYZ grid (at import and again in on_before_ui, without duplicates)."""
    xyz = next((d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py"), None)
    if xyz is None:
        return
    existing = {axis.label for axis in xyz.axis_options}
    for name, suffix in XYZ_AXES:
        label = TITLE if suffix is None else f"{TITLE} {suffix}"
        if label in existing:
            continue
        option = next(o for o in OPTIONS if o.name == name)
        choices = {"enable": xyz.boolean_choice, "raunet": xyz.boolean_choice,
                   "window_attention": xyz.boolean_choice, "preset": lambda: list(PRESETS),
                   "aggressive": lambda: list(AGGRESSIVE), "passes": lambda: list(PASSES)}.get(name)
        xyz.axis_options.append(xyz.AxisOption(
            label, float if name in ("t1", "t2") else str, _xyz_apply(name),
            confirm=_xyz_confirm(option, label), choices=choices))


def _xyz_apply(name):
    def apply(p, x, xs):
        setattr(p, f"hidiffusion_{name}", x)
    return apply


def _xyz_confirm(option, label):
    """Refuse the plot before any image if a value, or a value combined with the accordion's other
    settings, the loaded model and the size, would leave a cell without HiDiffusion."""
    def confirm(p, xs):
        script = next(s for s in p.scripts.alwayson_scripts if s.title() == TITLE)
        args = p.script_args[script.args_from:script.args_to]
        for x in xs:
            cell = copy.copy(p)
            setattr(cell, f"hidiffusion_{option.name}", x)
            try:
                values = read_args(cell, args)
                if values["enable"] and shared.sd_model is not None:
                    architecture = hidiffusion.detect(current_unet(cell))
                    hidiffusion.resolve(architecture, engine_settings(values), *snapped_size(p.width, p.height))
            except ValueError as e:
                raise RuntimeError(f"{label} {x}: {e}") from None
    return confirm


def refresh_on_settings(component, **kwargs):
    """The Settings' hidden JSON is rewritten once a settings change is applied, a checkpoint switch once
    the new model is loaded (the checkpoint dropdown's own change comes before that): both panels' Auto
    displays refresh then. It is built after both tabs, outside any script's after_component."""
    if kwargs.get("elem_id") != "settings_json":
        return
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        for script in runner.alwayson_scripts:
            if isinstance(script, HiDiffusionScript) and script.refresh is not None:
                script.refresh(component.change)


add_axis_options()
script_callbacks.on_after_component(refresh_on_settings)
script_callbacks.on_before_ui(add_axis_options)
script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_script_unloaded(hidiffusion.remove_all)
