"""RAU-Net: run the deep levels at the model's native resolution during the early steps.

Four operations, each placed with hooks or an attribute change that leaves module names and
`state_dict` keys untouched (hidiffusion-method.md §1, §4):

* RAD: the Downsample conv of one level runs with stride 4, padding 2, dilation 2 (same weights).
* RAU: its mirrored Upsample resizes to the size of the skip it will meet, then runs its own conv.
* CA-down: the output of the first level-1 block is avg-pooled (2x2, ceil) before it becomes a skip.
* CA-up: the output of the matching up block is resized (bicubic) back to the size before pooling.

Every Upsample of a patched UNet resizes to the exact size of its next skip (as the official code
does through diffusers' `upsample_size`), so skips and features always match: the webui's `th.cat`
would otherwise resize mismatches silently. Where x2 already matches, the output is untouched. (Forge's
UNet tells its Upsample the skip's size itself; the resize to the same size then changes nothing.)

ControlNet residuals are computed at the full latent size; while RAU-Net shrinks the deep levels, each is
resized to the feature it is added to, whether the control model's output is followed
(`follow_residuals`) or the residuals come as the UNet call's `control` argument (Forge's and ComfyUI's
UNets, which would otherwise drop a mismatched residual with a warning).
"""
import torch.nn.functional as F
from torch import nn

from .schedule import Phase, Plan

RAD_CONV = {"stride": (4, 4), "padding": (2, 2), "dilation": (2, 2)}


class RAUNet:
    """The hooks of one patched UNet; `phase` is read by them on every call."""

    def __init__(self, unet: nn.Module, plan: Plan):
        self.plan = plan
        self.phase = Phase(rad=False, ca=False)
        self.hooks = []
        self.input_sizes = {}          # Downsample block index -> spatial size of its input
        self.upsample_inputs = {}      # Upsample block index -> the tensor it was called with
        self.size_before_pool = None
        self.rad_convs = {}            # the RAD conv, and convs that must share its geometry -> their own

        downsamples = [i for i, block in enumerate(unet.input_blocks) if type(block[0]).__name__ == "Downsample"]
        self.downsample_convs = {i: unet.input_blocks[i][0].op for i in downsamples}
        self.input_blocks = len(unet.input_blocks)
        upsamples = [i for i, block in enumerate(unet.output_blocks) if type(block[-1]).__name__ == "Upsample"]
        for down in downsamples:
            self.hooks.append(unet.input_blocks[down][0].register_forward_pre_hook(self._record_input(down)))
        # The deepest Upsample meets the skip of the deepest Downsample, and so on outwards.
        for up, down in zip(upsamples, reversed(downsamples)):
            upsample = unet.output_blocks[up][-1]
            self.hooks.append(upsample.register_forward_pre_hook(self._stash_input(up)))
            self.hooks.append(upsample.conv.register_forward_pre_hook(self._resize_to_skip(up, down)))

        if plan.rad_input_block is not None:
            self.add_rad_twin(unet.input_blocks[plan.rad_input_block][0].op)
        self.hooks.append(unet.register_forward_pre_hook(self._fit_control_argument, with_kwargs=True))
        # A block's output is its last layer's. The layer is hooked, not the block: ComfyUI-style UNets
        # (Forge Classic, reForge) run a block's layers without calling the block module itself.
        self.hooks.append(unet.input_blocks[plan.ca_input_block][-1].register_forward_hook(self._pool))
        self.hooks.append(unet.output_blocks[plan.ca_output_block][-1].register_forward_hook(self._unpool))

    def set_phase(self, phase: Phase) -> None:
        if phase.rad != self.phase.rad:
            for conv, vanilla in self.rad_convs.items():
                self._set_geometry(conv, RAD_CONV if phase.rad else vanilla)
        self.phase = phase

    @staticmethod
    def _set_geometry(conv, geometry):
        for name, value in geometry.items():
            setattr(conv, name, value)

    def add_rad_twin(self, conv: nn.Conv2d) -> None:
        """A conv that runs on the RAD conv's input beside it (a LoRA's down projection added to its
        output, say) follows its stride, padding and dilation, so that both outputs keep one size."""
        if conv not in self.rad_convs:
            self.rad_convs[conv] = {name: getattr(conv, name) for name in RAD_CONV}
            if self.phase.rad:
                self._set_geometry(conv, RAD_CONV)

    def skip_sizes(self, height: int, width: int) -> list:
        """The spatial size of every input block's output (the skips) and of the middle block's, for a
        latent of height x width with the modifications of the current phase."""
        size, sizes = (height, width), []
        for index in range(self.input_blocks):
            conv = self.downsample_convs.get(index)
            if conv is not None:
                size = tuple((s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in
                             zip(size, conv.padding, conv.dilation, conv.kernel_size, conv.stride))
            if index == self.plan.ca_input_block and self.phase.ca:
                size = tuple(-(-s // 2) for s in size)      # avg-pool 2x2 with ceil
            sizes.append(size)
        return sizes + [size]

    def follow_residuals(self, module: nn.Module, blocks=None) -> None:
        """`module` returns features computed at the full latent size, one to be added to the output of each
        input block in `blocks` (the middle block is index len(input_blocks); default: every input block,
        then the middle block, as ControlNet's residuals). Resize them to this phase's feature sizes,
        averaging over the area, so that each lands on a feature of its own size instead of being resized
        by the host."""
        targets = list(range(self.input_blocks + 1)) if blocks is None else list(blocks)

        def resize(module, args, kwargs, features):
            if not (self.phase.rad or self.phase.ca) or len(features) != len(targets):
                return None
            latent = kwargs["x"] if "x" in kwargs else args[0]
            sizes = self.skip_sizes(*latent.shape[-2:])
            return [_fit(f, sizes[t]) for f, t in zip(features, targets)]
        self.hooks.append(module.register_forward_hook(resize, with_kwargs=True))

    def _fit_control_argument(self, unet, args, kwargs):
        """`control={"input": [...], "middle": [...], "output": [...]}`: the UNet pops each list from its end,
        "input" after each input block (block 0 first), "middle" after the middle block, "output" onto each
        skip (the last skip first). So the k-th element from the end of "input" meets input block k-1, of
        "output" skip n-k (n input blocks); "middle" meets the middle block's output."""
        control = kwargs.get("control")
        if not (self.phase.rad or self.phase.ca) or not isinstance(control, dict):
            return None
        sizes = self.skip_sizes(*(kwargs["x"] if "x" in kwargs else args[0]).shape[-2:])
        targets = {"input": lambda k: sizes[k - 1], "middle": lambda k: sizes[-1],
                   "output": lambda k: sizes[self.input_blocks - k]}
        fitted = {key: [_fit(f, targets[key](len(residuals) - i)) for i, f in enumerate(residuals)]
                  if key in targets and len(residuals) <= self.input_blocks else residuals
                  for key, residuals in control.items()}
        return args, dict(kwargs, control=fitted)

    def remove(self) -> None:
        self.set_phase(Phase(rad=False, ca=False))
        self.rad_convs.clear()
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        self.input_sizes.clear()
        self.upsample_inputs.clear()

    def _record_input(self, down):
        def hook(module, args):
            self.input_sizes[down] = tuple(args[0].shape[-2:])
        return hook

    def _stash_input(self, up):
        def hook(module, args):
            self.upsample_inputs[up] = args[0]
        return hook

    def _resize_to_skip(self, up, down):
        def hook(conv, args):
            doubled = args[0]
            source = self.upsample_inputs.pop(up)
            target = self.input_sizes[down]
            mode = "nearest"
            if self.phase.rad and up == self.plan.rau_output_block:
                mode = self.plan.settings.rau_upsample
            if mode == "nearest" and tuple(doubled.shape[-2:]) == target:
                return None
            return (F.interpolate(source, size=target, mode=mode),)
        return hook

    def _pool(self, layer, args, output):
        if not self.phase.ca:
            return None
        self.size_before_pool = tuple(output.shape[-2:])
        return F.avg_pool2d(output, kernel_size=2, stride=2, ceil_mode=True)

    def _unpool(self, layer, args, output):
        if not self.phase.ca:
            return None
        return F.interpolate(output, size=self.size_before_pool, mode="bicubic")


def _fit(residual, size):
    """A residual resized to `size` by averaging over the area (None, or the right size, as it is)."""
    if residual is None or tuple(residual.shape[-2:]) == tuple(size):
        return residual
    return F.interpolate(residual, size=size, mode="area")
