"""The XYZ grid's HiDiffusion axes: one per Option with an `axis` label, each checked before the plot runs."""
import copy
import functools

import hidiffusion
from modules import scripts, shared

from .job import current_unet, snapped_size
from .options import OPTIONS, TITLE, engine_settings, parse_bool, parse_ratio, read_args


BOOLEAN = ("True", "False")      # as the grid's own boolean_choice lists them (Forge Classic's grid has none)


def add_axis_options():
    """Add our axes to the XYZ grid (at import and again in on_before_ui, without duplicates)."""
    xyz = next((d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py"), None)
    if xyz is None:
        return
    existing = {axis.label for axis in xyz.axis_options}
    for option in OPTIONS:
        if option.axis is None or option.axis in existing:
            continue
        choices = functools.partial(list, BOOLEAN) if option.parse is parse_bool else \
            functools.partial(list, option.choices) if option.choices else None
        xyz.axis_options.append(xyz.AxisOption(
            option.axis, float if option.parse is parse_ratio else str, _xyz_apply(option.name),
            confirm=_xyz_confirm(option), choices=choices))


def _xyz_apply(name):
    def apply(p, x, xs):
        setattr(p, f"hidiffusion_{name}", x)
    return apply


def _xyz_confirm(option):
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
                # Forge loads its model at the first generation: a plot before it is checked cell by cell
                unet = current_unet(cell) if values["enable"] and shared.sd_model is not None else None
                if unet is not None:
                    architecture = hidiffusion.detect(unet)
                    hidiffusion.resolve(architecture, engine_settings(values), *snapped_size(p.width, p.height))
            except ValueError as e:
                raise RuntimeError(f"{option.axis} {x}: {e}") from None
    return confirm
