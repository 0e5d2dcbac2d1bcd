"""Shared fixtures: tiny twins of the real ldm/sgm UNets, with webui-style sdp attention."""
import pytest
import torch

from hidiffusion import remove_all
from testbed.unets import build_unet, example_inputs, sdp_attention

MODELS = ("sd15", "sd21", "sdxl")
pytest_plugins = ["webui_host.fixtures"]     # the real webui for the host tests


@pytest.fixture(scope="session", autouse=True)
def webui_sdp_attention():
    """The webui replaces CrossAttention.forward with sdp; HiDiffusion must go through whatever is there."""
    with sdp_attention():
        yield


@pytest.fixture(autouse=True)
def heal_shared_unets():
    """The tiny UNets are shared by the whole session: a failing test must not leave one patched."""
    yield
    remove_all()


@pytest.fixture(scope="session")
def tiny_unets():
    torch.manual_seed(0)
    return {model: build_unet(model, tiny=True) for model in MODELS}


@pytest.fixture(params=MODELS)
def model(request):
    return request.param


@pytest.fixture
def unet(tiny_unets, model):
    return tiny_unets[model]


@pytest.fixture
def inputs(unet, model):
    def make(height, width, batch=2, seed=0):
        return example_inputs(unet, model, batch, height, width, seed=seed)
    return make
