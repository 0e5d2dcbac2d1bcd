"""The real webui 1.10.1 the host tests run: its tree, its own venv and the tiny checkpoints, built once.

Built from the pinned sources in WEBUI_SOURCES (default `../shared/webui` beside this checkout) into a
cache outside the clone (HIDIFFUSION_CACHE, default `~/.cache/sd-webui-hidiffusion`), under a key of
everything that decides the result: the source tarballs and the pins (the venv), plus the checkpoint
builder (the models). A cold build takes a few minutes; later runs reuse it. Or set WEBUI_DIR (and
WEBUI_PYTHON) to run the tests against a webui you installed yourself.

The venv follows the webui's requirements_versions.txt, with torch held to the local CPU wheel and
the facts of running offline here (see `../shared/webui/README.md`): a torchvision placeholder, the
packages that need torchvision installed without their dependencies, setuptools below 81.
"""
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WEBUI_TARBALL = "stable-diffusion-webui-v1.10.1.tar.gz"
CONTROLNET_TARBALL = "sd-webui-controlnet-v1.1.455.tar.gz"
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
REQUIREMENTS = HERE / "requirements-webui.txt"
REQUIREMENTS_NODEPS = HERE / "requirements-webui-nodeps.txt"
NOT_FROM_WEBUI_PINS = ("torch", "setuptools")     # torch is the local wheel; setuptools is pinned above


class HostUnavailable(RuntimeError):
    """The webui cannot be built or found here; the message says why."""


@dataclass(frozen=True)
class Host:
    webui: Path                  # the webui tree (launch.py)
    python: Path                 # the interpreter of its venv
    models: Path                 # the tiny checkpoints, each with its .yaml
    controlnet: Path             # the sd-webui-controlnet tree to install as an extension


def sources() -> Path:
    return Path(os.environ.get("WEBUI_SOURCES", ROOT.parent / "shared" / "webui")).resolve()


def cache() -> Path:
    return Path(os.environ.get("HIDIFFUSION_CACHE", "~/.cache/sd-webui-hidiffusion")).expanduser().resolve()


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.read_bytes() if isinstance(part, Path) else str(part).encode())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _locked(folder: Path):
    """One build at a time, also across processes (two sessions on one machine share the cache)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(*command, cwd=None, log: Path):
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(map(str, command))}\n")
        out.flush()
        result = subprocess.run([str(c) for c in command], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise HostUnavailable(f"`{' '.join(map(str, command))}` failed with {result.returncode}; see {log}")


def _site_packages(venv: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))


def _webui_requirements(webui: Path) -> str:
    """requirements_versions.txt without the lines pinned elsewhere (it has CRLF line ends)."""
    nodeps = {line.split("==")[0].strip().lower() for line in REQUIREMENTS_NODEPS.read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    keep = []
    for line in (webui / "requirements_versions.txt").read_text().splitlines():
        name = line.split("==")[0].split("#")[0].strip().lower()
        if name and name not in NOT_FROM_WEBUI_PINS and name not in nodeps:
            keep.append(line.strip())
    return "\n".join(keep) + "\n"


def _build_webui(folder: Path, tarballs: Path, log: Path) -> None:
    for tarball in (WEBUI_TARBALL, CONTROLNET_TARBALL):
        with tarfile.open(tarballs / tarball) as archive:
            archive.extractall(folder, filter="data")
    webui = folder / "webui"
    (folder / "requirements-webui-pins.txt").write_text(_webui_requirements(webui))
    venv = folder / "venv"
    _run(sys.executable, "-m", "venv", venv, log=log)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check"]
    _run(*pip, "-c", CONSTRAINTS, "torch==2.13.0", "-r", folder / "requirements-webui-pins.txt",
         "-r", REQUIREMENTS, log=log)
    _run(*pip, "--no-deps", "-r", REQUIREMENTS_NODEPS, log=log)
    shutil.copytree(HERE / "torchvision", _site_packages(venv) / "torchvision",
                    ignore=shutil.ignore_patterns("__pycache__"))


def _fresh(folder: Path, build, *args) -> Path:
    """`folder` with `build(folder, *args)` done once; stale siblings of the same kind are removed."""
    if (folder / "ready").exists():
        return folder
    with _locked(folder.parent):
        if (folder / "ready").exists():
            return folder
        kind = folder.name.rsplit("-", 1)[0]
        for stale in folder.parent.glob(f"{kind}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        folder.mkdir(parents=True)
        build(folder, *args)
        (folder / "ready").touch()
    return folder


def _build_models(folder: Path, webui: Path, python: Path, controlnet: Path, log: Path) -> None:
    _run(python, HERE / "checkpoints.py", webui, controlnet, folder, cwd=webui, log=log)


def host() -> Host:
    """Build (or find) the webui, its venv and the tiny checkpoints; raise HostUnavailable saying why not."""
    tarballs = sources()
    needed = [CONTROLNET_TARBALL] + ([] if os.environ.get("WEBUI_DIR") else [WEBUI_TARBALL])
    missing = [t for t in needed if not (tarballs / t).exists()]
    if missing:
        raise HostUnavailable(f"no {', '.join(missing)} in WEBUI_SOURCES={tarballs}")
    if os.environ.get("WEBUI_DIR"):
        webui = Path(os.environ["WEBUI_DIR"]).resolve()
        python = Path(os.environ.get("WEBUI_PYTHON", webui / "venv" / "bin" / "python"))
        if not (webui / "launch.py").exists() or not python.exists():
            raise HostUnavailable(f"WEBUI_DIR={webui} has no launch.py, or its python {python} is missing")
        unpacked = _fresh(cache() / f"controlnet-{_digest(tarballs / CONTROLNET_TARBALL)}",
                          lambda folder: tarfile.open(tarballs / CONTROLNET_TARBALL).extractall(folder, filter="data"))
        controlnet = unpacked / "sd-webui-controlnet"
    else:
        key = _digest(tarballs / WEBUI_TARBALL, tarballs / CONTROLNET_TARBALL, CONSTRAINTS, REQUIREMENTS,
                      REQUIREMENTS_NODEPS, HERE / "torchvision" / "__init__.py", sys.version)
        folder = cache() / f"webui-{key}"
        _fresh(folder, _build_webui, tarballs, cache() / f"build-webui-{key}.log")
        webui, python, controlnet = folder / "webui", folder / "venv" / "bin" / "python", folder / "sd-webui-controlnet"
    key = _digest(str(python), str(webui), str(controlnet), HERE / "checkpoints.py")
    models = _fresh(cache() / f"models-{key}", _build_models, webui, python, controlnet,
                    cache() / f"build-models-{key}.log")
    return Host(webui=webui, python=python, models=models, controlnet=controlnet)
