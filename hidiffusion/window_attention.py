"""MSW-MSA: self-attention of the top transformer blocks inside 2x2 cyclically shifted windows.

Hooks on each `attn1` split the normalised tokens into four windows before the call and put them
back after it, so the attention itself is whatever the host installed (the webui swaps
`CrossAttention.forward` for sdp, xformers, sub-quadratic, ...). Cross-attention and feed-forward
are untouched. The token grid comes from the parent SpatialTransformer's input, not from a guess.

A call is left global (not windowed) when attn1 gets a context (ControlNet reference-only), when
the token count is not the grid's (ToMe merged tokens), or when a grid side is odd: the official
code resamples odd grids bicubically, which its own warning says costs quality; global attention
costs only speed.
"""
import functools
import random

import torch
from einops import rearrange
from torch import nn

from .schedule import Plan

SHIFTS = 4     # a shift of k quarter-windows, k in 0..3, on both axes


@functools.lru_cache(maxsize=64)
def window_order(h: int, w: int, shift: int, device: torch.device):
    """Token indices that roll an h x w grid by `shift` quarter-windows and list it window by window
    (top-left, top-right, bottom-left, bottom-right), and the inverse. One gather each way replaces a
    roll and a permute copy each way."""
    rows, cols = shift * (h // 2 // SHIFTS), shift * (w // 2 // SHIFTS)
    grid = torch.arange(h * w, device=device).view(h, w).roll((-rows, -cols), dims=(0, 1))
    order = rearrange(grid, "(nh h) (nw w) -> (nh nw h w)", nh=2, nw=2)
    return order, torch.argsort(order)


class WindowBlock:
    """The windowed attn1 calls of one SpatialTransformer."""

    def __init__(self, name: str, transformer: nn.Module, window_attention: "WindowAttention"):
        self.name = name
        self.owner = window_attention
        self.grid = None
        self.pending = {}       # attn1 -> the inverse token order, between its pre- and post-hook
        self.hooks = [transformer.register_forward_pre_hook(self._record_grid)]
        for block in transformer.transformer_blocks:
            self.hooks.append(block.attn1.register_forward_pre_hook(self._split, with_kwargs=True))
            self.hooks.append(block.attn1.register_forward_hook(self._merge))

    def _record_grid(self, transformer, args):
        self.grid = tuple(args[0].shape[-2:])

    def _split(self, attn, args, kwargs):
        self.pending.pop(attn, None)
        x = args[0]
        context = kwargs.get("context", args[1] if len(args) > 1 else None)
        h, w = self.grid
        if not self.owner.enabled or context is not None or x.shape[1] != h * w or h % 2 or w % 2:
            return None
        order, inverse = window_order(h, w, self.owner.shifts[self.name], x.device)
        self.pending[attn] = inverse
        windows = x.index_select(1, order)
        return (windows.view(x.shape[0] * 4, -1, x.shape[2]),) + tuple(args[1:]), kwargs

    def _merge(self, attn, args, output):
        inverse = self.pending.pop(attn, None)
        if inverse is None:
            return None
        return output.reshape(-1, len(inverse), output.shape[-1]).index_select(1, inverse)

    def remove(self):
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        self.pending.clear()


class WindowAttention:
    """All windowed blocks of one patched UNet, and the shift each uses at the current step."""

    def __init__(self, unet: nn.Module, plan: Plan, seed: int):
        self.mode = plan.settings.window_shift
        self.seed = seed
        self.enabled = False
        self.shifts = {}
        transformers = [(f"in{i}", unet.input_blocks[i][1]) for i in plan.window_input_blocks]
        transformers += [(f"out{i}", unet.output_blocks[i][1]) for i in plan.window_output_blocks]
        self.blocks = [WindowBlock(name, transformer, self) for name, transformer in transformers]

    def set_step(self, step: int, forced_shift=None) -> None:
        """Choose each block's shift for this step: the same for every UNet call within the step."""
        self.enabled = True
        self.shifts = {block.name: self._shift(block.name, step) if forced_shift is None else forced_shift
                       for block in self.blocks}

    def _shift(self, block_name: str, step: int) -> int:
        if self.mode == "none":
            return 0
        if self.mode == "rotate":
            return step % SHIFTS
        return random.Random(f"{self.seed}/{step}/{block_name}").randrange(SHIFTS)

    def remove(self) -> None:
        self.enabled = False
        for block in self.blocks:
            block.remove()
