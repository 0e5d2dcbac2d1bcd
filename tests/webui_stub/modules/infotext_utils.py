"""Infotext: writing (quote), parsing (the webui's key regex) and pasting (connect_paste semantics)."""
import json
import re

from modules import shared

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")


def quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(text):
    """Prompt lines, then the last line's `Key: value` pairs; every value is a string."""
    lines = text.strip().split("\n")
    res = {}
    for key, value in re_param.findall(lines[-1]):
        value = unquote(value.strip())
        size = re_imagesize.match(value)
        if size:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value
    for key in shared.opts.infotext_skip_pasting:
        res.pop(key, None)
    return res


def paste(paste_fields, params):
    """What `connect_paste.paste_func` sends to each component: {component: new value}; absent = unchanged."""
    updates = {}
    for component, key in paste_fields:
        value = key(params) if callable(key) else params.get(key, None)
        if value is None:
            continue    # gr.update(): the component keeps its current value
        valtype = type(component.value)
        if valtype == bool and value == "False":
            value = False
        elif valtype == int:
            value = float(value)
        else:
            value = valtype(value)
        updates[component] = value
    return updates
