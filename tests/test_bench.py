"""`python -m hidiffusion bench` on a tiny twin: every variant runs, the official one included (the
test stack installs it), and the JSON report has its documented structure. No timing assertions."""
import json

from hidiffusion.__main__ import main
from hidiffusion.bench import VARIANTS

PHASE_KEYS = {"name", "width", "height", "pass_index", "step_indices", "steps", "flops_per_step", "seconds",
              "seconds_per_step"}
RESULT_KEYS = {"unet_seconds", "ratio", "ideal_ratio", "efficiency", "flops", "peak_bytes", "activation_bytes",
               "activation_ratio"}


def test_bench_reports_every_variant(tmp_path, capsys):
    report_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = ["bench", "--width", "256", "--height", "256", "--steps", "2", "--t1", "0.5", "--repeats", "1",
            "--warmup", "0", "--no-progress", "--json", str(report_path), "--plot", str(plot_path)]
    assert main(argv) == 0

    report = json.loads(report_path.read_text())
    assert {"command", "config", "model", "date", "torch", "plan", "device", "variants", "targets"} <= set(report)
    assert report["config"]["steps"] == 2 and report["model"] == "SD1.5 (tiny twin)"
    assert [v["name"] for v in report["variants"]] == list(VARIANTS)
    for variant in report["variants"]:
        assert variant["status"] == "ok", (variant["name"], variant["reason"])
        assert RESULT_KEYS <= set(variant) and len(variant["repeats"]) == 1
        assert variant["unet_seconds"] > 0 and variant["flops"] > 0 and variant["peak_bytes"] > 0
        for phase in variant["phases"]:
            assert PHASE_KEYS <= set(phase) and phase["steps"] == len(phase["step_indices"])
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["vanilla"]["ratio"] == 1.0 and by_name["vanilla"]["ideal_ratio"] == 1.0
    # The phases follow the engine's schedule: T1 0.5 of 2 steps -> one RAD step, then MSW-MSA alone.
    assert [(p["name"], p["steps"]) for p in by_name["hidiffusion"]["phases"]] == [("RAD+MSW-MSA", 1), ("MSW-MSA", 1)]
    assert [(p["name"], p["steps"]) for p in by_name["raunet"]["phases"]] == [("RAD", 1), ("vanilla", 1)]
    # Hires. fix: 2 steps at min(native 512 px, target), then int(0.5 * 2) + 1 = 2 steps at the target.
    assert [p["steps"] for p in by_name["hires-fix"]["phases"]] == [2, 2]
    assert by_name["hidiffusion"]["ideal_ratio"] < 1 and by_name["disabled"]["ideal_ratio"] == 1.0
    assert set(report["targets"]) == {"hidiffusion_efficiency", "ours_over_official", "disabled_overhead",
                                      "activation_ratio", "hidiffusion_over_hires_fix"}
    assert "| hidiffusion |" in capsys.readouterr().out
    assert plot_path.read_bytes().startswith(b"\x89PNG")


def test_checkpoint_weights_load_bit_for_bit(tmp_path, tiny_unets, model):
    """--checkpoint: the architecture is read from a single-file checkpoint's UNet keys and the weights load."""
    import torch
    from safetensors.torch import save_file

    from hidiffusion.unets import CHECKPOINT_PREFIX, checkpoint_config, load_unet

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
