"""The settings: one table, in the order of the accordion's controls = the positional API args.

Each Option drives its UI control (label, tooltip, default, dropdown choices), its API/XYZ parsing, its
infotext key and its XYZ axis. `read_args` turns a run's args into the values the rest of the glue uses.
"""
import dataclasses
from typing import Any, Callable, Optional, Sequence

import hidiffusion

TITLE = "HiDiffusion"
PRESETS = {"Auto": "auto", "SD1.x": "sd1", "SD2.x": "sd2", "SDXL": "sdxl", "SDXL-Turbo": "sdxl-turbo"}
AGGRESSIVE = {"Auto": None, "On": True, "Off": False}
PASSES = ("Both", "First pass", "Hires pass")


def parse_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "on", "off", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "on", "yes", "1")
    raise ValueError(f"expected true or false, got {value!r}")


def parse_ratio(value):
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


def parse_choice(*choices, aliases=None):
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
    choices: Sequence[str] = ()        # a dropdown's choices, also offered on its XYZ axis
    infotext: Optional[str] = None     # infotext key (webui key syntax: letters, digits, spaces, "-", "/")
    axis: Optional[str] = None         # XYZ axis label


OPTIONS = (
    Option("enable", TITLE, False, parse_bool, "Generate above the model's native resolution without duplicated "
           "objects (RAU-Net) and faster (MSW-MSA).", infotext=TITLE, axis=TITLE),
    Option("raunet", "RAU-Net", True, parse_bool, "Resolution-aware U-Net: the deep levels run at the native "
           "resolution during the first steps, so the layout is composed once.", axis=f"{TITLE} RAU-Net"),
    Option("window_attention", "MSW-MSA", True, parse_bool, "Shifted-window self-attention in the top blocks: "
           "faster at high resolution, at every step.", axis=f"{TITLE} MSW-MSA"),
    Option("preset", "Model preset", "Auto", parse_choice(*PRESETS, aliases={v: k for k, v in PRESETS.items()}),
           "Auto recognises SD1.x / SD2.x / SDXL from the UNet's structure. Choose SDXL-Turbo for few-step "
           "SDXL models (RAU-Net without the strided convolution, T1 0.5).", choices=tuple(PRESETS),
           infotext=f"{TITLE} preset", axis=f"{TITLE} preset"),
    Option("auto_timing", "Auto T1/T2", True, parse_bool, "Take T1 and T2 from the official table for the model "
           "and image size (shown below). Off: use the sliders."),
    Option("t1", "T1", 0.4, parse_ratio, "Fraction of the steps with the main RAU-Net switch on (SD1.x/SD2.x: "
           "the stride-4 downsampler; SDXL: the pooled level-1 block).", infotext=f"{TITLE} T1", axis=f"{TITLE} T1"),
    Option("t2", "T2", 0.0, parse_ratio, "Fraction of the steps with the second switch on (SD1.x/SD2.x: the "
           "pooled level-1 block; SDXL: the stride-4 downsampler). Never above T1.", infotext=f"{TITLE} T2",
           axis=f"{TITLE} T2"),
    Option("aggressive", "Aggressive", "Auto", parse_choice(*AGGRESSIVE), "SDXL only: the stride-4 downsampler "
           "for the first 16% of the steps, then pooling until T1 (official for SDXL below 4096 px).",
           choices=tuple(AGGRESSIVE), infotext=f"{TITLE} aggressive", axis=f"{TITLE} aggressive"),
    Option("passes", "Apply to", "Both", parse_choice(*PASSES, aliases={"first": "First pass", "hires": "Hires pass"}),
           "Which sampling passes get HiDiffusion. img2img has only a first pass.", choices=PASSES,
           infotext=f"{TITLE} passes", axis=f"{TITLE} passes"),
    Option("native_guard", "Only above native resolution", True, parse_bool, "Skip a pass whose image fits "
           "within the model's native resolution (SD1.x 512, SDXL 1024): HiDiffusion is for larger images.",
           infotext=f"{TITLE} native guard"),
    Option("rau_upsample", "RAU upsampling", hidiffusion.RAU_UPSAMPLE_MODES[0],
           parse_choice(*hidiffusion.RAU_UPSAMPLE_MODES), "How the resolution-aware upsampler resizes before its "
           "convolution: nearest (official) or bicubic.", choices=hidiffusion.RAU_UPSAMPLE_MODES,
           infotext=f"{TITLE} RAU upsample"),
    Option("window_shift", "Window shift", hidiffusion.WINDOW_SHIFT_MODES[0],
           parse_choice(*hidiffusion.WINDOW_SHIFT_MODES), "MSW-MSA window shift per step: random (seeded from the "
           "image seed), rotate (step mod 4) or none.", choices=hidiffusion.WINDOW_SHIFT_MODES,
           infotext=f"{TITLE} window shift"),
)
OPTION = {o.name: o for o in OPTIONS}
DEFAULTS = {o.name: o.default for o in OPTIONS}
DICT_KEYS = [o.name for o in OPTIONS if o.name != "auto_timing"]   # dict form: "t1": "auto" | number

# Infotext keys: the options' own, and three that belong to no single option.
KEY = {**{o.name: o.infotext for o in OPTIONS if o.infotext}, "auto": f"{TITLE} auto", "note": f"{TITLE} note",
       "error": f"{TITLE} error"}


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
            values[name] = OPTION[name].parse(value)
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


def preset_label(preset):
    return next(label for label, key in PRESETS.items() if key == preset)
