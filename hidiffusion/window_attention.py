"""MSW-MSA: self-attention of the top transformer blocks inside 2x2 cyclically shifted windows.

Hooks on each `attn1` split the normalised tokens into four windows before the call and put them
back after it, so the attention itself is whatever the host installed (the webui swaps
`CrossAttention.forward` for sdp, xformers, sub-quadratic, ...). Cross-attention and feed-forward
are untouched. The token grid comes from the parent SpatialTransformer's input, not from a guess.

An odd grid side is cut at its floor half, so the windows differ by one row or column: windows of
one size share one attention call, and every token still attends exactly within its own window.
(The official code instead resamples odd grids bicubically to an even size and back, which its own
warning says costs quality.)

A call is left global (not windowed) when attn1 gets a context (ControlNet reference-only), when
the token count is not the grid's (ToMe merged tokens), or when a grid side is 1 (no split).
"""
import functools
import numbers
import random
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from .schedule import Plan, splits_into_windows

SHIFTS = 4     # a shift of k quarter-windows, k in 0..3, on both axes
Seeds = Union[int, Sequence[int]]                # one seed, or one per image
RowImages = Callable[[int], Sequence[int]]       # rows of a UNet batch -> the image of each row


@functools.lru_cache(maxsize=64)
def window_order(h: int, w: int, shift: int, device: torch.device):
    """Token indices that roll an h x w grid by `shift` quarter-windows and list it window by window
    (top-left, top-right, bottom-left, bottom-right); the inverse; and (windows, tokens per window)
    for each window size, in the order listed. One gather each way replaces a roll and a permute
    copy each way.

    Sides are cut at h // 2 and w // 2. Windows with the same token count are listed together, so
    that each size is one batch of attention: an even grid is one group of four windows."""
    half_h, half_w = h // 2, w // 2
    rows, cols = shift * (half_h // SHIFTS), shift * (half_w // SHIFTS)
    grid = torch.arange(h * w, device=device).view(h, w).roll((-rows, -cols), dims=(0, 1))
    groups = {}
    for top, bottom in ((0, half_h), (half_h, h)):
        for left, right in ((0, half_w), (half_w, w)):
            window = grid[top:bottom, left:right].flatten()
            groups.setdefault(len(window), []).append(window)
    order = torch.cat([window for windows in groups.values() for window in windows])
    sizes = tuple((len(windows), tokens) for tokens, windows in groups.items())
    return order, torch.argsort(order), sizes


def batch_order(h: int, w: int, shifts, device: torch.device):
    """`window_order` for a batch whose rows use `shifts`: one order when all rows agree, else one
    order per row (rows x tokens). The window sizes do not depend on the shift."""
    if len(set(shifts)) == 1:
        return window_order(h, w, shifts[0], device)
    orders, inverses, sizes = zip(*(window_order(h, w, shift, device) for shift in shifts))
    return torch.stack(orders), torch.stack(inverses), sizes[0]


def gather_tokens(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The tokens of x (batch, tokens, channels) in `order`: one order for every row, or one per row."""
    if order.dim() == 1:
        return x.index_select(1, order)
    return x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class WindowBlock:
    """The windowed attn1 calls of one SpatialTransformer."""

    def __init__(self, name: str, transformer: nn.Module, window_attention: "WindowAttention"):
        self.name = name
        self.owner = window_attention
        self.grid = None
        self.pending = {}       # attn1 -> what its post-hook needs to merge the windows back
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
        if not self.owner.enabled or not splits_into_windows(h, w):
            return None
        reason = ("attn1 gets a context (reference attention)" if context is not None else
                  "its tokens are merged (Token Merging)" if x.shape[1] != h * w else self.owner.kept_global.get(attn))
        if reason is not None:
            self.owner.left_global.setdefault(reason, {})[self.name] = None
            return None
        order, inverse, sizes = batch_order(h, w, self.owner.row_shifts(self.name, x.shape[0]), x.device)
        parts = gather_tokens(x, order).split([count * tokens for count, tokens in sizes], dim=1)
        batches = [part.reshape(-1, tokens, x.shape[2]) for part, (_, tokens) in zip(parts, sizes)]
        # One attention call per window size. The first goes through the call being hooked; the
        # others call the host's forward directly, since attn(...) would re-enter these hooks.
        others = [attn.forward(batch, *args[1:], **kwargs) for batch in batches[1:]]
        self.pending[attn] = inverse, others, x.shape[0]
        return (batches[0],) + tuple(args[1:]), kwargs

    def _merge(self, attn, args, output):
        pending = self.pending.pop(attn, None)
        if pending is None:
            return None
        inverse, others, rows = pending
        parts = [part.reshape(rows, -1, part.shape[-1]) for part in (output, *others)]
        return gather_tokens(torch.cat(parts, dim=1) if others else parts[0], inverse)

    def remove(self):
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        self.pending.clear()


class WindowAttention:
    """All windowed blocks of one patched UNet, and the shift each uses at the current step.

    Each image draws its shifts from its own seed, so an image of a batch can be reproduced from its
    seed alone. `row_images(rows)` names the image of each row of a UNet batch of `rows` rows; by
    default row r belongs to image r % len(seeds), as in the webui's [cond..., uncond...] batches
    (whole or split, with or without the uncond half)."""

    def __init__(self, unet: nn.Module, plan: Plan, seed: Seeds, row_images: Optional[RowImages] = None):
        self.seeds = (seed,) if isinstance(seed, numbers.Integral) else tuple(seed)
        if not self.seeds:
            raise ValueError("window shifts need at least one seed")
        self.mode = plan.settings.window_shift
        self.row_images = row_images or (lambda rows: [row % len(self.seeds) for row in range(rows)])
        self.enabled = False
        self.shifts = {}
        self.left_global = {}       # reason -> {block name: None} of the calls it kept global
        self.kept_global = {}       # attn1 -> why the host needs it to see the whole grid
        transformers = [(f"in{i}", unet.input_blocks[i][1]) for i in plan.window_input_blocks]
        transformers += [(f"out{i}", unet.output_blocks[i][1]) for i in plan.window_output_blocks]
        self.blocks = [WindowBlock(name, transformer, self) for name, transformer in transformers]

    def keep_global(self, attn: nn.Module, reason: str) -> None:
        """Leave the calls of this attn1 global: something the host added inside it needs the whole grid."""
        self.kept_global[attn] = reason

    def set_step(self, step: int, forced_shift=None) -> None:
        """Choose each block's shift per image for this step: the same for every UNet call within the step."""
        self.enabled = True
        self.shifts = {block.name: tuple(self._shift(seed, block.name, step) if forced_shift is None else forced_shift
                                         for seed in self.seeds)
                       for block in self.blocks}

    def row_shifts(self, block_name: str, rows: int) -> list:
        """The shift of each row of a UNet batch of `rows` rows: its image's."""
        return [self.shifts[block_name][image] for image in self.row_images(rows)]

    def _shift(self, seed: int, block_name: str, step: int) -> int:
        if self.mode == "none":
            return 0
        if self.mode == "rotate":
            return step % SHIFTS
        return random.Random(f"{seed}/{step}/{block_name}").randrange(SHIFTS)

    def remove(self) -> None:
        self.enabled = False
        for block in self.blocks:
            block.remove()
