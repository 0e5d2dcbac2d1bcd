"""The XYZ grid's axis API (AxisOption, axis_options, boolean_choice) and how it runs one axis's cells."""
from copy import copy

from modules import processing, scripts


class AxisOption:
    def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None, prepare=None):
        self.label, self.type, self.apply, self.format_value = label, type, apply, format_value
        self.confirm, self.cost, self.choices, self.prepare = confirm, cost, choices, prepare


def boolean_choice(reverse=False):
    return ["False", "True"] if reverse else ["True", "False"]


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)
    return fun


axis_options = [AxisOption("Nothing", str, lambda p, x, xs: None), AxisOption("Steps", int, apply_field("steps"))]


def run_axis(p, label, values):
    """One axis: convert, confirm (raises to abort), then a shallow copy of p per cell through process_images."""
    option = next(o for o in axis_options if o.label == label)
    xs = [option.type(v.strip()) for v in values.split(",")]
    if option.confirm:
        option.confirm(p, xs)
    cells = []
    for x in xs:
        pc = copy(p)
        option.apply(pc, x, xs)
        cells.append(processing.process_images(pc))
    return cells


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"
