"""`python -m testbed bench` on a tiny twin: every variant runs, the official one included (the
test stack installs it), and the JSON report has its documented structure. No timing assertions."""
import contextlib
import io
import json

import pytest
import torch

from testbed.__main__ import main
from testbed.bench.measure import OP_KINDS, OUTSIDE_OPS, peak_activation
from testbed.bench.variants import VARIANTS

PHASE_KEYS = {"name", "width", "height", "pass_index", "step_indices", "timed_step_indices", "steps", "flops_per_step",
              "samples", "seconds", "seconds_per_step", "activation_bytes"}
RESULT_KEYS = {"baseline", "unet_seconds", "ratio", "ideal_ratio", "efficiency", "flops", "activation_bytes",
               "activation_ratio"}


def run_bench(path, *args):
    """The report and the printed tables of `python -m testbed bench ARGS --json PATH`."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["bench", *args, "--no-progress", "--json", str(path)]) == 0
    return json.loads(path.read_text()), printed.getvalue()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    return run_bench(path, "--width", "256", "--height", "256", "--steps", "2", "--t1", "0.5", "--repeats", "1",
                     "--plot", str(path.with_suffix(".png"))) + (path.with_suffix(".png"),)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """Two variants, 4 steps, one timed step per phase, two repeats, profiled."""
    return run_bench(tmp_path_factory.mktemp("bench") / "bench.json", "--width", "128", "--height", "128",
                     "--steps", "4", "--t1", "0.5", "--repeats", "2", "--steps-per-phase", "1", "--profile",
                     "--variants", "vanilla,hidiffusion")


def test_bench_reports_every_variant(report):
    report, printed, plot_path = report
    assert {"command", "config", "model", "date", "torch", "plan", "device", "weights_bytes", "variants",
            "targets"} <= set(report)
    assert report["config"]["steps"] == 2 and report["model"] == "SD1.5 (tiny twin)"
    assert [v["name"] for v in report["variants"]] == list(VARIANTS)
    for variant in report["variants"]:
        assert variant["status"] == "ok", (variant["name"], variant["reason"])
        assert RESULT_KEYS <= set(variant)
        assert variant["unet_seconds"] > 0 and variant["flops"] > 0 and variant["activation_bytes"] > 0
        for phase in variant["phases"]:
            assert PHASE_KEYS <= set(phase) and phase["steps"] == len(phase["step_indices"])
            assert [len(times) for times in phase["samples"]] == [phase["steps"]]     # one repeat, every step
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["vanilla"]["ratio"] == 1.0 and by_name["vanilla"]["ideal_ratio"] == 1.0
    # The phases follow the engine's schedule: T1 0.5 of 2 steps -> one RAD step, then MSW-MSA alone.
    assert [(p["name"], p["steps"]) for p in by_name["hidiffusion"]["phases"]] == [("RAD+MSW-MSA", 1), ("MSW-MSA", 1)]
    assert [(p["name"], p["steps"]) for p in by_name["raunet"]["phases"]] == [("RAD", 1), ("vanilla", 1)]
    # Hires. fix: 2 steps at min(native 512 px, target), then int(0.5 * 2) + 1 = 2 steps at the target.
    assert [p["steps"] for p in by_name["hires-fix"]["phases"]] == [2, 2]
    assert by_name["hidiffusion"]["ideal_ratio"] < 1 and by_name["disabled"]["ideal_ratio"] == 1.0
    # Peak activation memory (allocator events, deterministic) is never above vanilla in any engine variant.
    assert 0 < report["targets"]["max_engine_activation_ratio"] <= 1.0
    assert "| hidiffusion | vanilla |" in printed and "like for like: ours/official" in printed
    assert plot_path.read_bytes().startswith(b"\x89PNG")


def test_official_is_compared_like_for_like(report):
    """Each side against its own vanilla, and ours against the official in absolute time."""
    by_name = {v["name"]: v for v in report[0]["variants"]}
    official, diffusers, ours = by_name["official"], by_name["vanilla-diffusers"], by_name["hidiffusion"]
    assert official["baseline"] == "vanilla-diffusers" and diffusers["baseline"] == "vanilla"
    assert official["ratio"] == pytest.approx(official["unet_seconds"] / diffusers["unet_seconds"])
    assert diffusers["ideal_ratio"] == 1.0 and official["ideal_ratio"] == pytest.approx(ours["ideal_ratio"])
    targets = report[0]["targets"]
    assert targets["ours_over_official"] == pytest.approx(ours["unet_seconds"] / official["unet_seconds"])
    assert targets["ours_over_official"] > 0 and targets["vanilla_diffusers_over_vanilla"] > 0
    assert set(targets["ours_over_official_by_phase"]) == {"RAD+MSW-MSA", "MSW-MSA"}


def test_profile_groups_add_up_to_the_call(sampled):
    vanilla, hidiffusion = sampled[0]["variants"]
    for phase in vanilla["phases"] + hidiffusion["phases"]:
        profiled = phase["profile"]
        assert set(profiled["groups"]) == {*OP_KINDS, "other ops", OUTSIDE_OPS}
        assert min(profiled["groups"].values()) >= 0 and profiled["groups"]["convolution"] > 0
        assert sum(profiled["groups"].values()) == pytest.approx(profiled["seconds"], rel=0.01)
        # Only MSW-MSA gathers tokens (index_select); the vanilla UNet never does.
        assert (profiled["groups"]["gathers"] > 0) == (phase in hidiffusion["phases"])
    assert "| hidiffusion | RAD+MSW-MSA |" in sampled[1]       # a row of the printed profile table


def test_peak_activation_counts_what_a_call_allocates_and_frees():
    kept = []

    def call():
        first = torch.empty(2 ** 20)            # 4 MiB
        kept.append(torch.empty(2 ** 18))       # 1 MiB that outlives the call: a cache, not an activation
        second = torch.empty(2 ** 19)           # 2 MiB while the first still lives: the peak, 6 MiB
        del first, second
        torch.empty(2 ** 20)                    # 4 MiB again, after both were freed

    assert peak_activation(call, torch.device("cpu")) == 6 * 2 ** 20


def test_steps_per_phase_times_a_sample_and_scales_it(sampled):
    hidiffusion = sampled[0]["variants"][1]
    assert [(p["name"], p["steps"], p["timed_step_indices"]) for p in hidiffusion["phases"]] == \
        [("RAD+MSW-MSA", 2, [0]), ("MSW-MSA", 2, [2])]
    for phase in hidiffusion["phases"]:
        assert [len(times) for times in phase["samples"]] == [1, 1]
        assert phase["seconds"] == pytest.approx(2 * phase["seconds_per_step"])
    assert hidiffusion["unet_seconds"] == pytest.approx(sum(p["seconds"] for p in hidiffusion["phases"]))


def test_checkpoint_weights_load_bit_for_bit(tmp_path, tiny_unets, model):
    """--checkpoint: the architecture is read from a single-file checkpoint's UNet keys and the weights load."""
    import torch
    from safetensors.torch import save_file

    from testbed.unets import CHECKPOINT_PREFIX, checkpoint_config, load_unet

    unet = tiny_unets[model]
    path = tmp_path / f"{model}.safetensors"
    tensors = {CHECKPOINT_PREFIX + key: value.contiguous() for key, value in unet.state_dict().items()}
    tensors["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)      # a VAE key is ignored
    save_file(tensors, str(path))
    assert checkpoint_config(str(path))[0] == model
    loaded_model, loaded = load_unet(str(path))
    assert loaded_model == model
    for (name, expected), (_, actual) in zip(unet.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(expected, actual), name


def test_unpatched_unet_takes_odd_latents_as_in_the_webui(unet, model):
    """Vanilla at 1920x1080 (latent 240x135) must run: the bench concatenates mismatched skips as the webui does."""
    import sys

    from testbed.unets import example_inputs, webui_skip_concat

    inputs = example_inputs(unet, model, 1, 17, 33)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
            unet(**inputs)
        with webui_skip_concat(model):
            assert unet(**inputs).shape == (1, 4, 17, 33)
    assert sys.modules[type(unet).__module__].th is torch      # restored
