"""Pytest fixtures of the real-host tests: the built webui and its servers, one of each per session.

With CI=true a host that cannot be built or started fails the tests; elsewhere they are skipped with
the reason. Every request checks the new part of the server's log for tracebacks, and so does the end
of every test (see `Webui.check_log`); the logs stay under the artifacts folder.
"""
import os
import sys

import pytest

from .browser import BrowserUnavailable, Page, chrome
from .environment import HostUnavailable, forge_classic_host, forge_host, forge_source, host
from .server import Webui


def _unavailable(reason: str, what: str = "the real webui"):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required in CI: {reason}", pytrace=False)
    pytest.skip(f"{what} unavailable: {reason}")


@pytest.fixture(scope="session")
def webui_host():
    try:
        return host()
    except HostUnavailable as e:
        _unavailable(str(e))


def _server(webui_host, name, **kwargs):
    server = Webui(webui_host, name, **kwargs)
    try:
        server.start()
    except RuntimeError as e:
        _unavailable(str(e))
    return server


@pytest.fixture(scope="session")
def webui(webui_host):
    """API-only (--nowebui), with sd-webui-hidiffusion, sd-webui-controlnet and the test probe."""
    server = _server(webui_host, "webui-api")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def webui_ui(webui_host):
    """UI mode (the page, and the API with --api), with the same extensions."""
    server = _server(webui_host, "webui-ui", mode="ui")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def webui_ui_reordered(webui_host):
    """UI mode with the page reordered in Settings: the size sliders before the row of accordions."""
    server = _server(webui_host, "webui-ui-reordered", mode="ui", settings={"ui_reorder_list": ["dimensions"]})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session (see `browser.py`)."""
    try:
        driver = chrome()
    except BrowserUnavailable as e:
        _unavailable(str(e), "a headless browser")
    yield driver
    driver.quit()


@pytest.fixture
def page(webui_ui, chromium):
    """The UI server's page, freshly loaded: every control at its default."""
    return Page(chromium, webui_ui.url).open()


@pytest.fixture(scope="session")
def webui_without_extension(webui_host):
    """The same webui with no extension installed: what "identical to no extension" compares against."""
    server = _server(webui_host, "webui-plain", extensions=())
    yield server
    server.stop()


FORGE_HOSTS = {"forge": forge_host, "forge-classic": forge_classic_host}


@pytest.fixture(scope="session", params=list(FORGE_HOSTS))
def forge_build(request):
    """WebUI Forge, built from the shared sources; and Forge Classic, where a git directory of it is at hand."""
    try:
        return FORGE_HOSTS[request.param]()
    except HostUnavailable as e:
        if request.param == "forge-classic":    # not among the shared sources: CI machines may not have it
            pytest.skip(f"Forge Classic unavailable: {e}")
        _unavailable(str(e), "WebUI Forge")


@pytest.fixture(scope="session")
def forge(forge_build):
    """Forge, API-only, with sd-webui-hidiffusion and the test probe (its ControlNet is built in)."""
    server = _server(forge_build, f"{forge_build.webui.name}-api")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def forge_ui(forge_build):
    """Forge in UI mode, with the same extensions."""
    server = _server(forge_build, f"{forge_build.webui.name}-ui", mode="ui")
    yield server
    server.stop()


@pytest.fixture
def forge_fresh(forge_build):
    """A Forge that has not generated yet: Forge loads its model at the first generation."""
    server = _server(forge_build, f"{forge_build.webui.name}-fresh")
    yield server
    server.check_log()      # here: a function's fixtures are torn down before `no_tracebacks` reads the logs
    server.stop()


@pytest.fixture(scope="session")
def forge_without_extension(forge_build):
    server = _server(forge_build, f"{forge_build.webui.name}-plain", extensions=())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def forge_backend():
    """Forge's UNet module (`backend.nn.unet`) and its model detection (`huggingface_guess.detection`),
    imported in this process from the pinned sources, as Forge's loader uses them."""
    try:
        tree = forge_source()
    except HostUnavailable as e:
        _unavailable(str(e), "WebUI Forge's sources")
    # Appended, so that nothing of ours is shadowed; Forge's own `modules` is never imported here.
    sys.path += [str(tree), str(tree / "packages_3rdparty"), str(tree / "repositories" / "huggingface_guess")]
    argv = list(sys.argv)
    # backend.args parses sys.argv at import; without --always-cpu backend.memory_management asks CUDA for a device.
    sys.argv[1:] = ["--always-cpu", "--attention-pytorch"]
    try:
        from backend.nn import unet
        from huggingface_guess import detection
    finally:
        sys.argv[:] = argv
    return unet, detection


@pytest.fixture(autouse=True)
def no_tracebacks(request):
    """A traceback a test did not announce fails it, whichever request caused it."""
    yield
    for name in ("webui", "webui_ui", "webui_ui_reordered", "webui_without_extension", "forge", "forge_ui",
                 "forge_without_extension"):
        if name in request.fixturenames:
            request.getfixturevalue(name).check_log()
