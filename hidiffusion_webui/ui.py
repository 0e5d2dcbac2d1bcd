"""The accordion, and its line that shows what Auto resolves to for the loaded model at each pass's size."""
import functools

import gradio as gr

import hidiffusion
from modules import scripts, shared
from modules.ui_components import FormRow, InputAccordion

from .host import unet_of
from .infotext import paste_fields
from .job import snapped_size
from .options import DEFAULTS, OPTION, OPTIONS, TITLE, engine_settings, normalize, preset_label

# The webui's controls that decide each pass's size, by elem_id: inputs of the Auto display. img2img's
# "Scale" is that of its "Resize by" tab (see javascript/hidiffusion.js).
SIZE_IDS = {"txt2img": ("txt2img_width", "txt2img_height", "txt2img_hr-checkbox", "txt2img_hr_scale",
                        "txt2img_hr_resize_x", "txt2img_hr_resize_y"),
            "img2img": ("img2img_width", "img2img_height", "img2img_scale")}
# img2img's other moments to refresh: its Resize to / Resize by tabs are chosen, and the hidden button
# its page clicks once a new source image shows
SIGNAL_IDS = {"txt2img": (), "img2img": ("img2img_tab_resize_to", "img2img_tab_resize_by",
                                         "img2img_update_resize_to")}

# The keyword of an event's client-side function: `_js` in gradio 3 (A1111), `js` in gradio 4 (Forge).
CLIENT_CODE = "_js" if int(gr.__version__.split(".")[0]) < 4 else "js"


class Panel:
    """The controls of one script instance (one tab), and the wiring of its Auto display."""

    def __init__(self, script):
        self.script = script    # gives the elem_ids and is_img2img, which the webui sets before ui()
        self.size_components = {}
        self.display = None     # (line, our controls by name) from the page's ui()
        self.refresh = None     # refresh(event): the Auto display on that event; set once it is wired

    @property
    def tab(self):
        return "img2img" if self.script.is_img2img else "txt2img"

    def after_component(self, component, elem_id):
        if elem_id in SIZE_IDS[self.tab] + SIGNAL_IDS[self.tab]:
            self.size_components[elem_id] = component
            self.wire()

    def build(self):
        """The script's ui(): its components (the positional API args), infotext_fields, paste_field_names."""
        c = {}
        with InputAccordion(False, label=TITLE, elem_id=self.script.elem_id("enable")) as c["enable"]:
            # The webui puts `tooltip=` on the InputAccordion's hidden checkbox; users hover the header.
            c["enable"].accordion.webui_tooltip = OPTIONS[0].tooltip
            line = gr.HTML(value="Auto values appear once the page has loaded.",
                           elem_id=self.script.elem_id("auto_info"))
            line.do_not_save_to_config = True
            with FormRow(variant="compact"):
                for name in ("raunet", "window_attention", "native_guard"):
                    c[name] = self.control(name, gr.Checkbox, min_width=0, scale=2 if name == "native_guard" else 1)
            with FormRow(variant="compact"):
                c["auto_timing"] = self.control("auto_timing", gr.Checkbox, min_width=0)
                for name in ("t1", "t2"):   # locked while Auto T1/T2 shows its values in them
                    c[name] = self.control(name, gr.Slider, minimum=0.0, maximum=1.0, step=0.05, min_width=0,
                                           scale=2, interactive=not DEFAULTS["auto_timing"])
                c["aggressive"] = self.control("aggressive", gr.Dropdown, choices=list(OPTION["aggressive"].choices),
                                               min_width=0, scale=2)
            with FormRow(variant="compact"):
                for name in ("preset", "passes", "rau_upsample", "window_shift"):
                    c[name] = self.control(name, gr.Dropdown, choices=list(OPTION[name].choices), min_width=0)
        # The webui drops positional API args beyond a script's controls without a word; this hidden last
        # control catches the first extra one, so a request with too many args is reported.
        overflow = gr.Textbox(value="", visible=False, label="Extra args (must stay empty)",
                              elem_id=self.script.elem_id("extra_args"))
        overflow.do_not_save_to_config = True
        controls = [c[o.name] for o in OPTIONS]
        self.display = (line, c)
        self.wire()
        return (controls + [overflow], *paste_fields(c))

    def control(self, name, component, **kwargs):
        option = OPTION[name]
        return component(value=option.default, label=option.label, tooltip=option.tooltip,
                         elem_id=self.script.elem_id(name), **kwargs)

    def wire(self):
        """Connect the Auto display once the page's controls, ours and the webui's size controls, all exist.
        The webui builds the accordions row before the width/height sliders by default and after them if
        the user reorders the page in Settings, so this runs from ui() and from after_component, and acts
        once. The API's own later calls of ui() (in a throw-away Blocks) find it done."""
        tab = self.tab
        if self.refresh is not None or self.display is None or \
                any(i not in self.size_components for i in SIZE_IDS[tab] + SIGNAL_IDS[tab]):
            return
        line, c = self.display
        sizes, controls = [self.size_components[i] for i in SIZE_IDS[tab]], [c[o.name] for o in OPTIONS]
        is_img2img = self.script.is_img2img

        client = {CLIENT_CODE: "hidiffusionImg2imgSize" if is_img2img else None}

        def refresh(event):
            event(fn=functools.partial(auto_display, is_img2img), inputs=sizes + controls,
                  outputs=[line, c["t1"], c["t2"]], show_progress=False, **client)

        self.refresh = refresh
        # Sliders on release, as the webui's own hires preview: change fires at every drag step, and gradio
        # drops a trigger while the previous one is pending, so the last value of a drag could be lost.
        for component in sizes + controls:
            refresh(component.release if isinstance(component, gr.Slider) else component.change)
        for signal in SIGNAL_IDS[tab]:
            component = self.size_components[signal]
            refresh(component.click if isinstance(component, gr.Button) else component.select)
        refresh(gr.context.Context.root_block.load)   # ui-config may have changed any default


def auto_display(is_img2img, *values):
    """The Auto line and the T1/T2 sliders, from the webui's size controls plus ours: while Auto T1/T2 is
    on, the sliders show the values the next image will use and cannot be dragged."""
    count = len(SIZE_IDS["img2img" if is_img2img else "txt2img"])
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


def refresh_on_settings(component, **kwargs):
    """The Settings' hidden JSON is rewritten once a settings change is applied, a checkpoint switch once
    the new model is loaded (the checkpoint dropdown's own change comes before that): both panels' Auto
    displays refresh then. It is built after both tabs, outside any script's after_component."""
    if kwargs.get("elem_id") != "settings_json":
        return
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        for script in runner.alwayson_scripts:
            panel = getattr(script, "panel", None)
            if isinstance(panel, Panel) and panel.refresh is not None:
                panel.refresh(component.change)


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
    unet = unet_of(shared.sd_model)
    if unet is None:
        return "Auto values appear once a model is loaded.", None
    try:
        architecture = hidiffusion.detect(unet)
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
