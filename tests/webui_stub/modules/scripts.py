"""Script / AlwaysVisible / scripts_data, script loading, and a ScriptRunner for AlwaysVisible scripts."""
import importlib.util
import os
import re
import sys
import traceback
from collections import namedtuple

from modules import script_callbacks  # noqa: F401  (scripts import it from here too)

AlwaysVisible = object()
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data = []
scripts_current = None          # the runner whose UI is being built (gradio_extensons reports components to it)


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class Script:
    name = filename = section = None
    args_from = args_to = None
    alwayson = False
    is_txt2img = is_img2img = False
    infotext_fields = paste_field_names = None
    api_info = None

    def title(self):
        raise NotImplementedError

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabname = ("img2img_" if self.is_img2img else "txt2img_") if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


def load_script(path):
    """Execute a script file as the webui does: module name = basename, extension dir first on sys.path."""
    basedir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    sys.path.insert(0, basedir)
    try:
        spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(basedir)
    for obj in module.__dict__.values():
        if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script:
            scripts_data.append(ScriptClassData(obj, path, basedir, module))
    return module


HOOKS = ("before_process", "process", "process_before_every_sampling", "before_hr", "post_sample", "postprocess")


class ScriptRunner:
    """The AlwaysVisible part of the webui's ScriptRunner: builds the UI, slices args, wraps every hook."""

    def __init__(self, script_classes, is_img2img=False):
        self.scripts, self.inputs = [], [None]      # inputs[0]: the selectable-script dropdown
        for cls in script_classes:
            script = cls()
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            if script.show(is_img2img) is AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
        self.is_img2img = is_img2img
        self.infotext_fields, self.paste_field_names = [], []

    def setup_ui(self):
        """create_script_ui_inner for each script; call inside a gr.Blocks."""
        global scripts_current
        scripts_current = self
        try:
            for script in self.scripts:
                script.args_from = len(self.inputs)
                controls = script.ui(self.is_img2img) or []
                self.inputs.extend(controls)
                script.args_to = len(self.inputs)
                self.infotext_fields.extend(script.infotext_fields or [])
                self.paste_field_names.extend(script.paste_field_names or [])
        finally:
            scripts_current = None
        return self.inputs

    def before_component(self, component, **kwargs):
        for script in self.scripts:
            script.before_component(component, **kwargs)

    def after_component(self, component, **kwargs):
        for script in self.scripts:
            script.after_component(component, **kwargs)

    def _call(self, hook, p, *args, **kwargs):
        for script in self.scripts:
            method = getattr(type(script), hook, None)
            if method is None or method is getattr(Script, hook, None):
                continue   # only overridden methods are called
            try:
                if hook in ("post_sample", "postprocess"):
                    getattr(script, hook)(p, args[0], *p.script_args[script.args_from:script.args_to])
                else:
                    getattr(script, hook)(p, *p.script_args[script.args_from:script.args_to], **kwargs)
            except Exception:
                print(f"Error running {hook}: {script.filename}\n{traceback.format_exc()}")

    def __getattr__(self, hook):
        if hook not in HOOKS:
            raise AttributeError(hook)
        return lambda p, *args, **kwargs: self._call(hook, p, *args, **kwargs)
