"""A stand-in for torchvision in the test webui's venv: no torchvision build matches the CPU torch here.

The webui, open_clip, timm, k-diffusion and facexlib import torchvision (and build transform pipelines)
at start-up, but the scenarios under test never run a torchvision operator. Every name resolves to a
placeholder class that can be imported, subclassed and instantiated; calling an instance (applying a
transform, running an op) raises, so a real use fails loudly instead of computing something wrong.
"""
import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+placeholder"


class _Placeholder(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")


def _placeholder(name):
    def fail(self, *args, **kwargs):
        raise RuntimeError(f"torchvision.{name} was used, but this test environment only has a placeholder")
    return _Placeholder(name, (), {"__init__": lambda self, *a, **k: None, "__call__": fail,
                                   "forward": fail, "__module__": "torchvision"})


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(f"{self.__name__.partition('.')[2]}.{name}".strip("."))
        setattr(self, name, value)
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Every submodule (torchvision.transforms.functional, torchvision.ops, ...) is a placeholder module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Module(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())
sys.modules[__name__].__class__ = _Module
