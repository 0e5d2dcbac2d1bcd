"""Settings, the official T1/T2 table, and which modification is active at which step.

`resolve()` turns user settings plus (architecture, width, height) into a `Plan`: the concrete blocks,
T1, T2 and aggressive flag actually used. `Plan.phase(step, total)` answers, for one executed step,
whether RAD/RAU and CA-down/up are on. Thresholds follow the official code: a mechanism gated by a
ratio r is active while `step < int(total * r)`, counted over the steps this pass executes.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from omegaconf import OmegaConf

from .architecture import Architecture

TABLES = OmegaConf.load(Path(__file__).with_name("presets.yaml"))
PRESETS = tuple(TABLES.presets)            # "sd1", "sd2", "sdxl", "sdxl-turbo"
RAU_UPSAMPLE_MODES = ("nearest", "bicubic")
WINDOW_SHIFT_MODES = ("random", "rotate", "none")
LATENT_SCALE = 8                           # pixels per latent cell for every supported VAE


def splits_into_windows(height: int, width: int) -> bool:
    """Whether MSW-MSA can cut a token grid into 2x2 windows: a side of 1 has no half."""
    return min(height, width) >= 2


def halved(grid: Tuple[int, int]) -> Tuple[int, int]:
    """A grid after a stride-2 Downsample (3x3, padding 1) or CA's 2x2 avg-pool with ceil_mode."""
    return tuple(-(-side // 2) for side in grid)


def _windows_on(blocks: Sequence[str], grid: Tuple[int, int]) -> str:
    """Whether `blocks` are windowed on `grid`, written width x height like image sizes."""
    tokens = f"on {grid[1]}x{grid[0]} tokens"
    if splits_into_windows(*grid):
        return f"{','.join(blocks)} windowed {tokens}"
    return f"{','.join(blocks)} global {tokens} (a side of 1 cannot be split)"


@dataclass(frozen=True)
class Settings:
    """What a user chooses. `None` means "Auto": taken from the official table for the size."""
    raunet: bool = True
    window_attention: bool = True
    preset: str = "auto"                   # "auto" (from the UNet's structure) or a key of PRESETS
    t1: Optional[float] = None
    t2: Optional[float] = None
    aggressive: Optional[bool] = None
    rau_upsample: str = "nearest"          # official: nearest to the skip size, then the block's conv
    window_shift: str = "random"           # random: seeded per (seed, step, block); rotate: step % 4

    def validate(self) -> None:
        """Raise ValueError with a message a user can act on."""
        if self.preset != "auto" and self.preset not in PRESETS:
            raise ValueError(f"preset must be 'auto' or one of {', '.join(PRESETS)}; got {self.preset!r}")
        for name in ("t1", "t2"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name.upper()} must be between 0 and 1; got {value}")
        if self.rau_upsample not in RAU_UPSAMPLE_MODES:
            raise ValueError(f"RAU upsampling must be one of {', '.join(RAU_UPSAMPLE_MODES)}; "
                             f"got {self.rau_upsample!r}")
        if self.window_shift not in WINDOW_SHIFT_MODES:
            raise ValueError(f"window shift must be one of {', '.join(WINDOW_SHIFT_MODES)}; "
                             f"got {self.window_shift!r}")


@dataclass(frozen=True)
class Phase:
    """What is switched on for one step."""
    rad: bool       # resolution-aware down/upsampler (stride-4 conv and its matching upsampler)
    ca: bool        # avg-pool after the first level-1 block, bicubic back in the matching up block


@dataclass(frozen=True)
class Plan:
    """Settings resolved for one model and one image size: everything the patch needs."""
    architecture: Architecture
    preset: str
    settings: Settings
    t1: float
    t2: float
    aggressive: bool
    rad_input_block: Optional[int]        # None: this preset has no RAD/RAU
    rau_output_block: Optional[int]
    ca_input_block: int
    ca_output_block: int
    window_input_blocks: Tuple[int, ...]
    window_output_blocks: Tuple[int, ...]
    window_grid: Tuple[int, int]          # (height, width) in tokens of the windowed blocks without CA
    native_resolution: int
    notes: Tuple[str, ...] = field(default=())

    @property
    def _preset(self):
        return TABLES.presets[self.preset]

    def _threshold(self, name: Optional[str]) -> Optional[float]:
        return {"t1": self.t1, "t2": self.t2, None: None}[name]

    def phase(self, step: int, total: int) -> Phase:
        """Which RAU-Net parts run at 0-based executed step `step` of `total` executed steps."""
        if not self.settings.raunet:
            return Phase(rad=False, ca=False)
        rad_ratio = self._threshold(self._preset.rad_threshold)
        ca_ratio = self._threshold(self._preset.ca_threshold)
        if self.aggressive:
            switch = int(total * self._preset.aggressive_fraction)
            return Phase(rad=step < switch, ca=switch <= step < int(total * ca_ratio))
        return Phase(rad=rad_ratio is not None and step < int(total * rad_ratio),
                     ca=step < int(total * ca_ratio))

    def window_grids(self, ca: bool = False) -> Dict[str, Tuple[int, int]]:
        """The token grid (height, width) of each windowed block at this size, while CA pools or not:
        blocks between the pool and the resize back see the pooled grid."""
        pooled = halved(self.window_grid) if ca else self.window_grid
        grids = {f"in{i}": pooled if i > self.ca_input_block else self.window_grid for i in self.window_input_blocks}
        grids.update({f"out{i}": pooled if i <= self.ca_output_block else self.window_grid
                      for i in self.window_output_blocks})
        return grids

    def describe(self) -> str:
        """One line for the console, the infotext and the bench report."""
        parts = [f"{self._preset.title} ({self.architecture})"]
        if self.settings.raunet:
            rau = f"RAU-Net T1 {self.t1:g} T2 {self.t2:g}"
            if self.aggressive:
                rau += " aggressive"
            if self.rad_input_block is not None:
                rau += f", RAD in{self.rad_input_block}/out{self.rau_output_block} {self.settings.rau_upsample}"
            rau += f", CA in{self.ca_input_block}/out{self.ca_output_block}"
            parts.append(rau)
        if self.settings.window_attention:
            windows = f"MSW-MSA shift {self.settings.window_shift}: "
            windows += _windows_on(list(self.window_grids()), self.window_grid)
            if self.settings.raunet and self._threshold(self._preset.ca_threshold) > 0:
                pooled = [block for block, grid in self.window_grids(ca=True).items() if grid != self.window_grid]
                if pooled:
                    windows += ", while CA pools " + _windows_on(pooled, halved(self.window_grid))
            parts.append(windows)
        return "; ".join(parts + list(self.notes))


def resolve(architecture: Architecture, settings: Settings, width: int, height: int) -> Plan:
    """Choose the preset row for an image of `width` x `height` pixels and apply the user overrides."""
    settings.validate()
    if width <= 0 or height <= 0 or width % LATENT_SCALE or height % LATENT_SCALE:
        raise ValueError(f"width and height must be positive multiples of {LATENT_SCALE}; got {width}x{height}")
    preset_name = architecture.family if settings.preset == "auto" else settings.preset
    preset = TABLES.presets[preset_name]
    if preset.layout != architecture.layout:
        raise ValueError(f"preset {preset.title} does not fit this {architecture} UNet")
    layout = TABLES.layouts[preset.layout]
    short_latent_side = min(width, height) // LATENT_SCALE
    window_grid = (height // LATENT_SCALE, width // LATENT_SCALE)
    for _ in range(layout.window_level):
        window_grid = halved(window_grid)
    row = next(r for r in preset.schedule if "below_latent" not in r or short_latent_side < r.below_latent)
    notes = []

    # The official code turns aggressive mode off for inpainting UNets.
    aggressive = row.aggressive and not architecture.inpainting
    if settings.aggressive is not None:
        if settings.aggressive and "aggressive_fraction" not in preset:
            notes.append(f"aggressive ignored: {preset.title} has no aggressive mode")
            aggressive = False
        else:
            aggressive = settings.aggressive

    t1 = row.t1 if settings.t1 is None else settings.t1
    t2 = row.t2 if settings.t2 is None else settings.t2
    if t2 > t1:         # every official row has T2 <= T1: the second switch runs inside the first's span
        notes.append(f"T2 lowered from {t2:g} to T1 {t1:g}")
        t2 = t1
    has_rad = preset.rad_threshold is not None
    return Plan(
        architecture=architecture, preset=preset_name, settings=settings, t1=t1, t2=t2, aggressive=aggressive,
        rad_input_block=layout.rad if has_rad else None, rau_output_block=layout.rau if has_rad else None,
        ca_input_block=layout.ca_down, ca_output_block=layout.ca_up,
        window_input_blocks=tuple(layout.window_input_blocks),
        window_output_blocks=tuple(layout.window_output_blocks), window_grid=window_grid,
        native_resolution=preset.native_resolution, notes=tuple(notes))
