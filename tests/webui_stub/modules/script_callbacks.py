"""Callback registry: registration functions, the parameter objects, and the runners the webui calls."""
import inspect
import os
import traceback
from collections import defaultdict

callback_map = defaultdict(list)     # category -> [(name, fn)]


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond,
                 denoiser=None):
        self.x, self.image_cond, self.sigma = x, image_cond, sigma
        self.sampling_step, self.total_sampling_steps = sampling_step, total_sampling_steps
        self.text_cond, self.text_uncond, self.denoiser = text_cond, text_uncond, denoiser


def add_callback(category, fn, name=None):
    caller = inspect.stack()[2].filename     # the webui names callbacks after the registering file
    callback_map[category].append((name or f"{os.path.basename(caller)}/{category}", fn))


def _run(category, *args):
    for name, fn in list(callback_map[category]):
        try:
            fn(*args)
        except Exception:     # a failing callback is only reported
            print(f"Error executing callback {name}:\n{traceback.format_exc()}")


def on_cfg_denoiser(fn, *, name=None):
    add_callback("cfg_denoiser", fn, name)


def on_before_ui(fn, *, name=None):
    add_callback("before_ui", fn, name)


def on_script_unloaded(fn, *, name=None):
    add_callback("script_unloaded", fn, name)


def on_before_component(fn, *, name=None):
    add_callback("before_component", fn, name)


def on_after_component(fn, *, name=None):
    add_callback("after_component", fn, name)


def cfg_denoiser_callback(params):
    _run("cfg_denoiser", params)


def before_ui_callback():
    _run("before_ui")


def script_unloaded_callback():
    for name, fn in reversed(list(callback_map["script_unloaded"])):
        try:
            fn()
        except Exception:
            print(f"Error executing callback {name}:\n{traceback.format_exc()}")


def before_component_callback(component, **kwargs):
    _run("before_component", component)


def after_component_callback(component, **kwargs):
    _run("after_component", component)


def remove_callbacks_for_function(fn):
    for category in callback_map.values():
        category[:] = [(n, f) for n, f in category if f is not fn]


def clear_callbacks():
    callback_map.clear()
