"""The layout the README's map draws: what each package may import, read from its source."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Besides the standard library and its own modules, what each package may import.
ALLOWED = {
    "hidiffusion": {"torch", "einops", "omegaconf"},
    "hidiffusion_webui": {"hidiffusion", "modules", "gradio", "torch"},
    "testbed": {"hidiffusion", "torch", "einops", "safetensors", "diffusers", "tqdm", "matplotlib"},
}


def imports(package):
    """(file, imported module) of every absolute import in the package, at any depth of the code."""
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                yield from ((path.name, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                yield path.name, node.module


@pytest.mark.parametrize("package", list(ALLOWED))
def test_package_imports_only_what_the_map_allows(package):
    found = {(path, module) for path, module in imports(package)
             if module.split(".")[0] not in ALLOWED[package] | set(sys.stdlib_module_names)}
    assert not found


@pytest.mark.parametrize("package", ["hidiffusion_webui", "testbed"])
def test_the_engine_is_used_through_its_public_names(package):
    assert not {(path, module) for path, module in imports(package) if module.startswith("hidiffusion.")}
