"""Apply, drive and remove HiDiffusion on one UNet; a registry heals every UNet ever patched.

The patch is hooks plus one conv's stride/padding/dilation while RAD runs: module names,
`state_dict` keys and weights never change, and removal restores the UNet bit for bit.
"""
import weakref
from typing import Callable, Optional

from torch import nn

from .architecture import UnsupportedModel, detect
from .raunet import RAUNet
from .schedule import Phase, Plan
from .window_attention import RowImages, Seeds, WindowAttention

_patched: "weakref.WeakKeyDictionary[nn.Module, Patch]" = weakref.WeakKeyDictionary()


class Patch:
    """HiDiffusion applied to one UNet. Drive it with `set_step`; undo it with `remove`."""

    def __init__(self, unet: nn.Module, plan: Plan, seed: Seeds = 0, row_images: Optional[RowImages] = None,
                 guard: Optional[Callable[[], bool]] = None):
        self._unet = weakref.ref(unet)      # the registry must not keep a dropped model alive
        self.plan = plan
        self.raunet = RAUNet(unet, plan)
        self.window_attention = (WindowAttention(unet, plan, seed, row_images)
                                 if plan.settings.window_attention else None)
        self.guard = None if guard is None else unet.register_forward_pre_hook(self._guarded(guard))

    def _guarded(self, guard):
        def hook(unet, args):
            if not guard():     # this UNet call is not part of the run that applied the patch
                self.remove()
        return hook

    def set_step(self, step: int, total: int, shift: Optional[int] = None) -> Phase:
        """Switch the modifications for executed step `step` (0-based) of `total` executed steps.

        Call it before the UNet calls of each step; the UNet may run several times per step.
        `shift` forces the MSW-MSA shift (0..3 quarter windows) of every block, for tests.
        """
        phase = self.plan.phase(step, total)
        self.raunet.set_phase(phase)
        if self.window_attention is not None:
            self.window_attention.set_step(step, shift)
        return phase

    @property
    def phase(self) -> Phase:
        """What the last `set_step` switched on."""
        return self.raunet.phase

    def remove(self) -> None:
        """Restore the UNet exactly; safe to call twice."""
        self.raunet.remove()
        if self.window_attention is not None:
            self.window_attention.remove()
        if self.guard is not None:
            self.guard.remove()
        unet = self._unet()
        if unet is not None and _patched.get(unet) is self:
            del _patched[unet]


def apply(unet: nn.Module, plan: Plan, seed: Seeds = 0, row_images: Optional[RowImages] = None,
          guard: Optional[Callable[[], bool]] = None) -> Patch:
    """Patch `unet` according to `plan` (from `resolve`), replacing any earlier patch on it.

    Nothing changes the UNet's output until `set_step` is called. `seed` makes the window shifts
    reproducible: a shift is a function of (seed, step, block). With one seed per image, each image
    draws its own shifts; `row_images(rows)` gives the image index of each row of a UNet batch of
    `rows` rows (default: row r is image r % len(seed), the webui's [cond..., uncond...] layout).
    `guard`, if given, is asked before every UNet call; when it answers False the patch removes itself
    first, so a host whose run died without cleaning up still gets the vanilla UNet in its next use.
    """
    architecture = detect(unet)     # refuses unknown layouts before any hook is installed
    if architecture.layout != plan.architecture.layout:
        raise UnsupportedModel(f"the plan was resolved for {plan.architecture}, this UNet is {architecture}")
    remove(unet)
    patch = Patch(unet, plan, seed, row_images, guard)
    _patched[unet] = patch
    return patch


def remove(unet: nn.Module) -> bool:
    """Remove the patch from `unet` if it has one; return whether it had."""
    patch = _patched.get(unet)
    if patch is None:
        return False
    patch.remove()
    return True


def remove_all() -> int:
    """Restore every UNet still patched (self-healing after an error); return how many there were."""
    patches = list(_patched.values())
    for patch in patches:
        patch.remove()
    return len(patches)


def patched(unet: nn.Module) -> Optional[Patch]:
    """The live patch on `unet`, if any."""
    return _patched.get(unet)
