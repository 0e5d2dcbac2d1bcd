"""One running webui (A1111 or Forge): a fresh data folder, the extensions installed as a user installs them,
its log.

Each server gets its own `--data-dir` under the artifacts folder (config, models, extensions, the log),
so the cached webui tree is never written to and every run starts clean. The extension is cloned from
this checkout (then the working tree's changes are laid over the clone, so an uncommitted change is
what gets tested) and its install.py is run by the webui's own `run_extension_installer`.
"""
import base64
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from .environment import ROOT, Host

EXTENSION = "sd-webui-hidiffusion"
PROBE = Path(__file__).resolve().parent / "probe"
SETTINGS = {
    "cross_attention_optimization": "sdp - scaled dot product",   # CPU "Automatic" picks InvokeAI, 3.5x slower
    "live_previews_enable": False,        # the SDXL preview model would be downloaded
    "samples_save": False, "grid_save": False,
    # After a request, the webui restores only the overridden options it has in its data (the config), so
    # every option a test overrides is written here with its default, or the override would stay.
    "token_merging_ratio": 0.0, "lora_functional": False, "always_discard_next_to_last_sigma": False,
    "hypertile_enable_unet": False, "hypertile_max_depth_unet": 3, "hypertile_max_tile_unet": 256,
    "sd_checkpoints_limit": 1,
}
STARTUP_TIMEOUT = 300
# How each host runs on the CPU here. A1111: its "Automatic" attention on the CPU is InvokeAI's (3.5x
# slower than sdp, chosen in SETTINGS); its pickle check does not know torch 2.13's `.format_version` entry
# (embeddings). Forge: its own CPU flag (without it, its memory management asks CUDA for a device), and
# pytorch's attention (on the CPU it would pick sub-quadratic attention; on a GPU pytorch's is its default).
HOST_FLAGS = {"a1111": ["--use-cpu", "all", "--disable-safe-unpickle"],
              "forge": ["--always-cpu", "--attention-pytorch"]}
DEFAULT_CHECKPOINT = {"a1111": "tiny-sd15", "forge": "forge-sd15"}
MODEL_FOLDERS = ("Stable-diffusion", "ControlNet", "Lora")   # as checkpoints.py writes them


def artifacts() -> Path:
    return Path(os.environ.get("HIDIFFUSION_ARTIFACTS", ROOT / "test-artifacts")).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_extension(host: Host, extensions: Path) -> str:
    """Clone this checkout into `extensions/`, lay the working tree's changes over it, then run its
    install.py the way the webui does. Returns the installer's output."""
    target = extensions / EXTENSION
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listing):
        source, copy = ROOT / name, target / name
        if source.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
        elif copy.exists():             # deleted in the working tree
            copy.unlink()
    installer = subprocess.run(
        [str(host.python), "-c", "import sys; from modules import launch_utils; "
                                 "launch_utils.run_extension_installer(sys.argv[1])", str(target)],
        cwd=host.webui, capture_output=True, text=True)
    return installer.stdout + installer.stderr


class Webui:
    """A webui process. `mode` is "api" (--nowebui) or "ui" (the page, and the API with --api)."""

    def __init__(self, host: Host, name: str, mode: str = "api", extensions=("hidiffusion", "controlnet", "probe"),
                 checkpoint: Optional[str] = None, settings=None):
        self.host, self.name, self.mode = host, name, mode
        self.data = artifacts() / name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data / "webui.log"
        self.checked = 0             # how far the log has been checked for tracebacks
        self.expected_error = None
        self.process: Optional[subprocess.Popen] = None
        self.installer_output = None
        self.tree = host.webui       # where launch.py runs
        shutil.rmtree(self.data, ignore_errors=True)
        self._prepare(extensions, checkpoint or DEFAULT_CHECKPOINT[host.kind], dict(SETTINGS, **(settings or {})))

    def _prepare(self, extensions, checkpoint, settings):
        for kind in MODEL_FOLDERS:          # symlinks: the checkpoints stay in the cache
            folder = self.data / "models" / kind
            folder.mkdir(parents=True)
            for model in (self.host.models / kind).glob("*"):
                (folder / model.name).symlink_to(model)
        self.checkpoint = self.data / "models" / "Stable-diffusion" / f"{checkpoint}.safetensors"
        (self.data / "embeddings").mkdir()
        (self.data / "config.json").write_text(json.dumps(settings))
        extension_dir = self.data / "extensions"
        extension_dir.mkdir()
        if "hidiffusion" in extensions:
            self.installer_output = install_extension(self.host, extension_dir)
        if "controlnet" in extensions and self.host.controlnet is not None:     # Forge has its own, built in
            shutil.copytree(self.host.controlnet, extension_dir / "sd-webui-controlnet")
        self.probed = "probe" in extensions
        if self.probed:
            shutil.copytree(PROBE, extension_dir / "hidiffusion-test-probe")
        if self.mode == "ui":
            self._serve_page_files()

    def _serve_page_files(self):
        """The page loads the webui's own scripts as `file=javascript/...`, which gradio refuses (403) when any
        folder of the real path starts with a dot (the default cache is under ~/.cache): without them no
        webui JavaScript runs. So a UI server runs a copy of the webui tree (a few MB) in its data folder."""
        dotted = [part for part in self.data.parts if part.startswith(".")]
        if dotted:
            raise RuntimeError(f"UI mode needs an artifacts folder without dotted folders ({self.data}); "
                               "set HIDIFFUSION_ARTIFACTS")
        self.tree = self.data / "webui"
        shutil.copytree(self.host.webui, self.tree, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))

    def start(self) -> "Webui":
        command = [str(self.host.python), "launch.py", "--skip-prepare-environment", "--skip-torch-cuda-test",
                   "--no-half", "--no-download-sd-model", "--disable-nan-check", "--no-hashing",
                   *HOST_FLAGS[self.host.kind],
                   "--data-dir", str(self.data), "--ckpt", str(self.checkpoint), "--port", str(self.port),
                   "--server-name", "127.0.0.1", "--nowebui" if self.mode == "api" else "--api"]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
                   OMP_WAIT_POLICY="PASSIVE",        # a busy machine: no spinning threads
                   HF_HOME=str(self.data / "huggingface"))      # Forge's default is inside its (cached) tree
        for name in ("PYTHONPATH", "VIRTUAL_ENV"):
            env.pop(name, None)
        self.process = subprocess.Popen(command, cwd=self.tree, env=env, stdout=open(self.log_path, "w"),
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the webui ({self.mode}) did not start; log: {self.log_path}\n{self.log()[-3000:]}")
            time.sleep(0.5)   # polling for the port to answer, not a wait for a guessed duration
        return self

    def _answers(self) -> bool:
        # The API answers before the app_started callbacks have run, and those add the probe's routes.
        path = "/hidiffusion-probe/paused" if self.probed else "/sdapi/v1/samplers"
        try:
            urllib.request.urlopen(self.url + path, timeout=5).read()
            return True
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def new_log(self) -> str:
        """The log written since the last call."""
        text = self.log()
        new, self.checked = text[self.checked:], len(text)
        return new

    def check_log(self) -> str:
        """The new part of the log; fails on a traceback, unless the test announced it with `expect_error`
        and the new log carries the announced message."""
        new = self.new_log()
        if "Traceback (most recent call last)" in new and not (self.expected_error and self.expected_error in new):
            raise AssertionError(f"traceback in the webui log ({self.log_path}):\n{new[-4000:]}")
        return new

    @contextlib.contextmanager
    def expect_error(self, message: str):
        """The test provokes an error on purpose; its traceback must carry `message`. The webui may finish
        printing it after the response, so the log is read until the last traceback ends with it."""
        self.expected_error = message
        try:
            yield
            deadline = time.monotonic() + 30
            while True:
                text = self.log()
                if text.rfind(message) > text.rfind("Traceback (most recent call last)") or time.monotonic() > deadline:
                    break
                time.sleep(0.05)    # polling the log for the end of the traceback
            self.check_log()
        finally:
            self.expected_error = None

    def call(self, path: str, payload=None, timeout: float = 900, check: bool = True):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result = json.loads(response.read() or "null")
        except urllib.error.HTTPError as e:
            result = {"status": e.code, **json.loads(e.read() or "{}")}
        if check:
            self.check_log()
        return result

    def probe(self, route: str, **options):
        """The test probe extension. GET calls, state, paused; POST reset (pause_at_call=, raise_at_call=)
        and resume."""
        post = route in ("reset", "resume", "train")
        return self.call(f"/hidiffusion-probe/{route}", options if post else None, check=False)

    def txt2img(self, **payload):
        return self.call("/sdapi/v1/txt2img", payload)

    def settle_rng(self):
        """img2img samples its VAE encoding from the global torch RNG, which the previous generation left
        seeded with its last seed: a 1-step txt2img with seed 1 before each img2img makes them comparable."""
        self.txt2img(prompt="", steps=1, width=64, height=64, seed=1)

    def img2img(self, **payload):
        self.settle_rng()
        return self.call("/sdapi/v1/img2img", payload)


def decode(response, index: int = 0):
    """(size, mode, bytes) of an image: PNG bytes also carry the infotext, which differs between runs."""
    from PIL import Image
    picture = Image.open(io.BytesIO(base64.b64decode(response["images"][index])))
    return picture.size, picture.mode, picture.tobytes()


def info(response) -> dict:
    return json.loads(response["info"])
