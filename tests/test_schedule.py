import pytest

from hidiffusion import Architecture, Settings, resolve

SD1 = Architecture(family="sd1", layout="sd", in_channels=4)
SDXL = Architecture(family="sdxl", layout="sdxl", in_channels=4)
SDXL_INPAINT = Architecture(family="sdxl", layout="sdxl", in_channels=9)


def active_steps(plan, total, part):
    steps = [step for step in range(total) if getattr(plan.phase(step, total), part)]
    return (steps[0], steps[-1]) if steps else None


# The official schedules worked out in hidiffusion-method.md §1.3 (0-based executed steps).
@pytest.mark.parametrize("architecture, settings, size, total, rad, ca", [
    (SD1, Settings(), (1024, 1024), 50, (0, 19), None),
    (SD1, Settings(), (2048, 1024), 50, (0, 19), None),           # either side < 2048 px: the 1024 row
    (SD1, Settings(), (2048, 2048), 50, (0, 34), (0, 14)),
    (SDXL, Settings(), (2048, 2048), 50, (0, 7), (8, 19)),        # aggressive
    (SDXL, Settings(), (2048, 2048), 30, (0, 3), (4, 11)),
    (SDXL, Settings(), (2048, 2048), 20, (0, 2), (3, 7)),
    (SDXL_INPAINT, Settings(), (2048, 2048), 50, None, (0, 19)),  # official: no aggressive for inpainting
    (SDXL, Settings(), (4096, 4096), 50, (0, 14), (0, 34)),
    (SDXL, Settings(preset="sdxl-turbo"), (1024, 1024), 4, None, (0, 1)),
    (SDXL, Settings(aggressive=False), (2048, 2048), 50, None, (0, 19)),
    (SD1, Settings(t1=0.5, t2=0.2), (1024, 1024), 10, (0, 4), (0, 1)),
])
def test_official_schedules(architecture, settings, size, total, rad, ca):
    plan = resolve(architecture, settings, *size)
    assert active_steps(plan, total, "rad") == rad
    assert active_steps(plan, total, "ca") == ca


def test_rows_and_blocks_resolved_per_family():
    sd = resolve(SD1, Settings(), 1024, 1024)
    assert (sd.t1, sd.t2, sd.aggressive) == (0.4, 0.0, False)
    assert (sd.rad_input_block, sd.rau_output_block, sd.ca_input_block, sd.ca_output_block) == (3, 8, 4, 7)
    assert (sd.window_input_blocks, sd.window_output_blocks) == ((1, 2), (9, 10, 11))
    xl = resolve(SDXL, Settings(), 2048, 2048)
    assert (xl.t1, xl.t2, xl.aggressive) == (0.4, 0.0, True)
    assert (xl.rad_input_block, xl.rau_output_block, xl.ca_input_block, xl.ca_output_block) == (6, 2, 4, 4)
    assert (xl.window_input_blocks, xl.window_output_blocks) == ((4, 5), (3, 4, 5))
    turbo = resolve(SDXL, Settings(preset="sdxl-turbo"), 1024, 1024)
    assert turbo.rad_input_block is None and turbo.t1 == 0.5 and turbo.native_resolution == 512


def test_raunet_off_means_no_phase_and_describe_says_what_runs():
    plan = resolve(SD1, Settings(raunet=False), 1024, 1024)
    assert not any(plan.phase(step, 10).rad or plan.phase(step, 10).ca for step in range(10))
    assert "RAU-Net" not in plan.describe()
    assert plan.describe().endswith("MSW-MSA shift random: in1,in2,out9,out10,out11 windowed on 128x128 tokens")
    full = resolve(SDXL, Settings(), 2048, 1536).describe()
    assert full.startswith("SDXL (SDXL); RAU-Net T1 0.4 T2 0 aggressive, RAD in6/out2 nearest, CA in4/out4")


# The windowed level is the latent (SD1.x/2.x) or the latent halved with ceil (SDXL level 1); in SDXL's
# CA steps in5, out3 and out4 run on that grid pooled (ceil) once more.
@pytest.mark.parametrize("architecture, settings, size, windows", [
    (SD1, Settings(), (1920, 1080), "in1,in2,out9,out10,out11 windowed on 240x135 tokens"),
    (SD1, Settings(), (512, 8), "in1,in2,out9,out10,out11 global on 64x1 tokens (a side of 1 cannot be split)"),
    (SDXL, Settings(), (1920, 1080),
     "in4,in5,out3,out4,out5 windowed on 120x68 tokens, while CA pools in5,out3,out4 windowed on 60x34 tokens"),
    (SDXL, Settings(raunet=False), (1928, 1080), "in4,in5,out3,out4,out5 windowed on 121x68 tokens"),
    (SDXL, Settings(), (256, 32), "in4,in5,out3,out4,out5 windowed on 16x2 tokens, "
                                  "while CA pools in5,out3,out4 global on 8x1 tokens (a side of 1 cannot be split)"),
], ids=["sd-1920x1080", "sd-side-1", "sdxl-ca", "sdxl-no-ca", "sdxl-pooled-side-1"])
def test_describe_says_which_blocks_are_windowed_at_this_size(architecture, settings, size, windows):
    assert resolve(architecture, settings, *size).describe().endswith(f"; MSW-MSA shift random: {windows}")


@pytest.mark.parametrize("settings, message", [
    (Settings(t1=1.5), "T1 must be between 0 and 1"),
    (Settings(t2=-0.1), "T2 must be between 0 and 1"),
    (Settings(preset="sd3"), "preset must be"),
    (Settings(rau_upsample="area"), "RAU upsampling"),
    (Settings(window_shift="spiral"), "window shift"),
])
def test_bad_settings_are_rejected_with_messages(settings, message):
    with pytest.raises(ValueError, match=message):
        resolve(SD1, settings, 1024, 1024)


def test_sizes_and_presets_that_do_not_fit_are_rejected():
    with pytest.raises(ValueError, match="multiples of 8"):
        resolve(SD1, Settings(), 1020, 1024)
    with pytest.raises(ValueError, match="does not fit"):
        resolve(SD1, Settings(preset="sdxl"), 1024, 1024)


def test_adjustments_are_explained_in_notes():
    lowered = resolve(SD1, Settings(t1=0.2), 2048, 2048)      # the 2048 row's T2 0.3 exceeds T1 0.2
    assert lowered.t2 == 0.2 and "T2 lowered from 0.3 to T1 0.2" in lowered.describe()
    explicit = resolve(SD1, Settings(t1=0.3, t2=0.5), 1024, 1024)   # chosen in the UI or by an XYZ cell
    assert (explicit.t1, explicit.t2) == (0.3, 0.3) and "T2 lowered from 0.5 to T1 0.3" in explicit.describe()
    ignored = resolve(SD1, Settings(aggressive=True), 1024, 1024)
    assert not ignored.aggressive and "aggressive ignored" in ignored.describe()
