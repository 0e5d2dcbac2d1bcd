"""The webui's gradio patch: every component accepts `tooltip=`, and scripts see components being built."""
import gradio as gr

from modules import script_callbacks, scripts

_original_init = gr.components.IOComponent.__init__


def _init(self, *args, **kwargs):
    self.webui_tooltip = kwargs.pop("tooltip", None)
    if scripts.scripts_current is not None:
        scripts.scripts_current.before_component(self, **kwargs)
    script_callbacks.before_component_callback(self, **kwargs)
    _original_init(self, *args, **kwargs)
    script_callbacks.after_component_callback(self, **kwargs)
    if scripts.scripts_current is not None:
        scripts.scripts_current.after_component(self, **kwargs)


if getattr(gr.components.IOComponent.__init__, "__name__", "") != "_init":
    gr.components.IOComponent.__init__ = _init
