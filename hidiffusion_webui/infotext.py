"""What a run writes into the infotext, and how a pasted infotext or "Send to" sets the controls again."""
from .options import AGGRESSIVE, DEFAULTS, KEY, OPTIONS, TITLE, preset_label


def write_request(p, values):
    """The infotext of the choices; the resolved preset/T1/T2/aggressive are added when a pass applies."""
    params = p.extra_generation_params
    parts = [name for name, on in (("RAU-Net", values["raunet"]), ("MSW-MSA", values["window_attention"])) if on]
    params[KEY["enable"]] = "+".join(parts)
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


def write_plan(p, plan):
    """What a pass that applies resolved: the preset, and T1/T2/aggressive while RAU-Net is on."""
    params = p.extra_generation_params
    params[KEY["preset"]] = preset_label(plan.preset)
    if plan.settings.raunet:
        params[KEY["t1"]], params[KEY["t2"]], params[KEY["aggressive"]] = plan.t1, plan.t2, plan.aggressive
    else:
        for name in ("t1", "t2", "aggressive"):
            params.pop(KEY[name], None)


def clear_infotext(p):
    """XYZ cells share one extra_generation_params: start every run without our keys."""
    for key in KEY.values():
        p.extra_generation_params.pop(key, None)


def fail(p, message):
    print(f"{TITLE}: {message}; generating without HiDiffusion")
    p.extra_generation_params[KEY["error"]] = message


def paste_fields(c):
    """(infotext_fields, paste_field_names) of the script whose controls by option name are `c`."""
    key = lambda name, d, default: d.get(KEY[name], default)           # noqa: E731
    marker = lambda d: d.get(KEY["auto"], "").split()                   # noqa: E731
    parts = lambda d: d.get(KEY["enable"], "RAU-Net+MSW-MSA").split("+")  # noqa: E731
    fields = [
        (c["enable"], lambda d: KEY["enable"] in d),
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
    return send_to + fields, [name for _, name in send_to]
