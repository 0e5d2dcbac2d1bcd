"""The real hosts the host tests run, each built once: its tree, its own venv and the tiny checkpoints.

The AUTOMATIC1111 webui 1.10.1 is built from the pinned sources in WEBUI_SOURCES (default `../shared/webui`
beside this checkout), WebUI Forge from FORGE_SOURCES (default `../shared/forge`), into a cache outside the
clone (HIDIFFUSION_CACHE, default `~/.cache/sd-webui-hidiffusion`), under a key of everything that decides
the result: the source tarballs and the pins (the venv), plus the checkpoint builder (the models). A cold
build takes a few minutes; later runs reuse it. Or set WEBUI_DIR (and WEBUI_PYTHON) to run the A1111 tests
against a webui you installed yourself.

Each venv follows its host's requirements_versions.txt, with torch held to the local CPU wheel and the
facts of running offline here (see the README beside each source): a torchvision placeholder, the packages
that need torchvision installed without their dependencies, setuptools below 81.
"""
import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WEBUI_TARBALL = "stable-diffusion-webui-v1.10.1.tar.gz"
CONTROLNET_TARBALL = "sd-webui-controlnet-v1.1.455.tar.gz"
FORGE_TARBALL = "stable-diffusion-webui-forge-dfdcbab6.tar.gz"
FORGE_MODEL_DETECTION_TARBALL = "huggingface_guess-84826248.tar.gz"
NOT_FROM_HOST_PINS = ("torch", "setuptools")     # torch is the local wheel; setuptools is pinned in ours


@dataclass(frozen=True)
class Recipe:
    """How one host's tree and venv are built."""
    tree: str                    # the folder launch.py is in, inside the build folder
    tarballs: tuple              # (tarball, folder to extract it into, relative to the build folder)
    constraints: Path            # on every pip call: torch stays the local CPU wheel
    requirements: Path           # ours, beside the host's own pins
    nodeps: Path                 # installed with --no-deps (they depend on torchvision)
    host_pins: str = "requirements_versions.txt"


A1111 = Recipe("webui", ((WEBUI_TARBALL, "."), (CONTROLNET_TARBALL, ".")), ROOT / ".ci" / "constraints.txt",
               HERE / "requirements-webui.txt", HERE / "requirements-webui-nodeps.txt")
# Forge clones its model detection into repositories/ at start-up, which --skip-prepare-environment skips.
FORGE = Recipe("stable-diffusion-webui-forge",
               ((FORGE_TARBALL, "."), (FORGE_MODEL_DETECTION_TARBALL, "stable-diffusion-webui-forge/repositories")),
               HERE / "constraints-forge.txt", HERE / "requirements-forge.txt", HERE / "requirements-forge-nodeps.txt")
# Forge Classic (Haoming02/sd-webui-forge-classic, the gradio 3 Forge kept alive) is not among the shared
# sources: it comes from a git directory (what the `fetch` tool brings), archived at this commit of its
# "classic" branch (2025-02-21). It uses the A1111 webui's repositories at the commits webui 1.10.1 pins.
FORGE_CLASSIC_COMMIT = "1f95d7170189cf93952aca122c1ee2f306a07e4c"
FORGE_CLASSIC = Recipe("sd-webui-forge-classic", ((WEBUI_TARBALL, "a1111"),), HERE / "constraints-forge.txt",
                       HERE / "requirements-forge-classic.txt", HERE / "requirements-forge-classic-nodeps.txt",
                       host_pins="requirements.txt")


class HostUnavailable(RuntimeError):
    """The webui cannot be built or found here; the message says why."""


@dataclass(frozen=True)
class Host:
    webui: Path                  # the webui tree (launch.py)
    python: Path                 # the interpreter of its venv
    models: Path                 # the tiny checkpoints (in folders named as the webui's models/ folders)
    controlnet: Optional[Path]   # the sd-webui-controlnet tree to install as an extension (Forge has its own)
    kind: str = "a1111"          # or "forge"


def sources(kind: str = "a1111") -> Path:
    variable, folder = ("FORGE_SOURCES", "forge") if kind == "forge" else ("WEBUI_SOURCES", "webui")
    return Path(os.environ.get(variable, ROOT.parent / "shared" / folder)).resolve()


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


def _host_requirements(tree: Path, recipe: Recipe) -> str:
    """The host's own pins without the lines pinned elsewhere (it has CRLF line ends).
    Names are matched whole: `torch` must not take `torchdiffeq` and `torchsde` with it."""
    def name(line):
        return line.split("==")[0].split("#")[0].strip().lower()
    ours = {name(line) for line in recipe.nodeps.read_text().splitlines() if "==" in line}
    keep = [line.strip() for line in (tree / recipe.host_pins).read_text().splitlines()
            if name(line) and name(line) not in NOT_FROM_HOST_PINS and name(line) not in ours]
    return "\n".join(keep) + "\n"


def _unpack(folder: Path, recipe: Recipe, tarballs: Path) -> None:
    for tarball, into in recipe.tarballs:
        with tarfile.open(tarballs / tarball) as archive:
            archive.extractall(folder / into, filter="data")


def _unpack_classic(folder: Path, git_dir: Path, tarballs: Path) -> None:
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--format=tar",
                              f"--prefix={FORGE_CLASSIC.tree}/", FORGE_CLASSIC_COMMIT], capture_output=True)
    if archive.returncode:
        raise HostUnavailable(f"{git_dir} has no commit {FORGE_CLASSIC_COMMIT}: {archive.stderr.decode()[-300:]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tree:
        tree.extractall(folder, filter="data")
    _unpack(folder, FORGE_CLASSIC, tarballs)
    shutil.move(folder / "a1111" / "webui" / "repositories", folder / FORGE_CLASSIC.tree / "repositories")
    shutil.rmtree(folder / "a1111")


def _build_tree(folder: Path, recipe: Recipe, tarballs: Path, log: Path, git_dir: Optional[Path] = None) -> None:
    if git_dir is None:
        _unpack(folder, recipe, tarballs)
    else:
        _unpack_classic(folder, git_dir, tarballs)
    tree = folder / recipe.tree
    (folder / "requirements-host-pins.txt").write_text(_host_requirements(tree, recipe))
    venv = folder / "venv"
    _run(sys.executable, "-m", "venv", venv, log=log)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check"]
    _run(*pip, "-c", recipe.constraints, "torch==2.13.0", "-r", folder / "requirements-host-pins.txt",
         "-r", recipe.requirements, log=log)
    _run(*pip, "--no-deps", "-r", recipe.nodeps, log=log)
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
        for stale in folder.parent.glob(f"{kind}-" + "[0-9a-f]" * 12):      # not "forge-models-*" for "forge"
            shutil.rmtree(stale, ignore_errors=True)
        folder.mkdir(parents=True)
        build(folder, *args)
        (folder / "ready").touch()
    return folder


def _build_models(folder: Path, log: Path, builder: Path, webui: Path, python: Path, *args) -> None:
    _run(python, builder, webui, *args, folder, cwd=webui, log=log)


def _missing(tarballs: Path, needed) -> None:
    missing = [t for t in needed if not (tarballs / t).exists()]
    if missing:
        raise HostUnavailable(f"no {', '.join(missing)} in {tarballs}")


def _recipe_key(recipe: Recipe, tarballs: Path, *more) -> str:
    return _digest(*(tarballs / tarball for tarball, _ in recipe.tarballs), recipe.constraints, recipe.requirements,
                   recipe.nodeps, HERE / "torchvision" / "__init__.py", sys.version, *more)


def forge_source() -> Path:
    """Forge's tree with its model detection in repositories/, unpacked without a venv: enough to build
    Forge's UNet class in the test process."""
    tarballs = sources("forge")
    _missing(tarballs, [tarball for tarball, _ in FORGE.tarballs])
    key = _digest(*(tarballs / tarball for tarball, _ in FORGE.tarballs))
    return _fresh(cache() / f"forge-source-{key}", _unpack, FORGE, tarballs) / FORGE.tree


def forge_host() -> Host:
    """Build (or find) WebUI Forge, its venv and its tiny checkpoints; raise HostUnavailable saying why not."""
    tarballs = sources("forge")
    _missing(tarballs, [tarball for tarball, _ in FORGE.tarballs])
    key = _recipe_key(FORGE, tarballs)
    folder = _fresh(cache() / f"forge-{key}", _build_tree, FORGE, tarballs, cache() / f"build-forge-{key}.log")
    forge, python = folder / FORGE.tree, folder / "venv" / "bin" / "python"
    (forge / "repositories" / "stable-diffusion-webui-assets").mkdir(exist_ok=True)   # what UI mode mounts
    builder = HERE / "forge_checkpoints.py"
    key = _digest(str(python), str(forge), builder)
    models = _fresh(cache() / f"forge-models-{key}", _build_models, cache() / f"build-forge-models-{key}.log",
                    builder, forge, python)
    return Host(webui=forge, python=python, models=models, controlnet=None, kind="forge")


def forge_classic_host() -> Host:
    """Build Forge Classic from FORGE_CLASSIC_SOURCES (a git directory of Haoming02/sd-webui-forge-classic,
    default `../.mirror/Haoming02+sd-webui-forge-classic/repo`, where `fetch` puts it), with the same
    checkpoints as Forge; raise HostUnavailable saying why not."""
    git_dir = Path(os.environ.get("FORGE_CLASSIC_SOURCES",
                                  ROOT.parent / ".mirror" / "Haoming02+sd-webui-forge-classic" / "repo")).resolve()
    tarballs = sources()
    _missing(tarballs, [WEBUI_TARBALL])
    if not git_dir.is_dir():
        raise HostUnavailable(f"no git directory of Forge Classic at FORGE_CLASSIC_SOURCES={git_dir} (it is not "
                              "among the shared sources; fetch github:Haoming02/sd-webui-forge-classic)")
    key = _recipe_key(FORGE_CLASSIC, tarballs, FORGE_CLASSIC_COMMIT)
    folder = _fresh(cache() / f"forge-classic-{key}", _build_tree, FORGE_CLASSIC, tarballs,
                    cache() / f"build-forge-classic-{key}.log", git_dir)
    return Host(webui=folder / FORGE_CLASSIC.tree, python=folder / "venv" / "bin" / "python",
                models=forge_host().models, controlnet=None, kind="forge")


def host() -> Host:
    """Build (or find) the webui, its venv and the tiny checkpoints; raise HostUnavailable saying why not."""
    tarballs = sources()
    _missing(tarballs, [CONTROLNET_TARBALL] + ([] if os.environ.get("WEBUI_DIR") else [WEBUI_TARBALL]))
    if os.environ.get("WEBUI_DIR"):
        webui = Path(os.environ["WEBUI_DIR"]).resolve()
        python = Path(os.environ.get("WEBUI_PYTHON", webui / "venv" / "bin" / "python"))
        if not (webui / "launch.py").exists() or not python.exists():
            raise HostUnavailable(f"WEBUI_DIR={webui} has no launch.py, or its python {python} is missing")
        unpacked = _fresh(cache() / f"controlnet-{_digest(tarballs / CONTROLNET_TARBALL)}",
                          lambda folder: tarfile.open(tarballs / CONTROLNET_TARBALL).extractall(folder, filter="data"))
        controlnet = unpacked / "sd-webui-controlnet"
    else:
        key = _recipe_key(A1111, tarballs)
        folder = cache() / f"webui-{key}"
        _fresh(folder, _build_tree, A1111, tarballs, cache() / f"build-webui-{key}.log")
        webui, python, controlnet = folder / "webui", folder / "venv" / "bin" / "python", folder / "sd-webui-controlnet"
    key = _digest(str(python), str(webui), str(controlnet), HERE / "checkpoints.py")
    models = _fresh(cache() / f"models-{key}", _build_models, cache() / f"build-models-{key}.log",
                    HERE / "checkpoints.py", webui, python, controlnet)
    return Host(webui=webui, python=python, models=models, controlnet=controlnet)
