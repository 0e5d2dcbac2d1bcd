"""install.py as the webui runs it: only what is missing gets installed.

The real-host harness runs it through the webui's own `run_extension_installer` (where einops and
omegaconf are always present); the branch that installs something needs a webui missing them, so here
`launch` is replaced by a namespace that says einops is there and omegaconf is not.
"""
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_install_installs_only_whats_missing(monkeypatch):
    installed = []
    launch = types.SimpleNamespace(is_installed=lambda name: name == "einops",
                                   run_pip=lambda command, desc=None: installed.append(command))
    monkeypatch.setitem(sys.modules, "launch", launch)
    exec(compile((ROOT / "install.py").read_text(), "install.py", "exec"), {"__name__": "__main__"})
    assert len(installed) == 1 and "omegaconf" in installed[0] and "einops" not in installed[0]
