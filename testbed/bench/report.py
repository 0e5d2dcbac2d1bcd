"""The report: ratios to each variant's baseline and the targets, as Markdown tables and a bar chart."""
import statistics
from typing import List

from .measure import OP_KINDS, OUTSIDE_OPS
from .variants import VARIANTS

MIB = 2 ** 20


def summarise(report: dict, entries: dict) -> None:
    """Seconds per phase and variant, ratios to each variant's baseline, ideal ratios and efficiency, in place."""
    for entry in entries.values():
        if entry["status"] != "ok":
            continue
        for phase in entry["phases"]:
            phase["seconds_per_step"] = statistics.median(statistics.fmean(times) for times in phase["samples"])
            phase["seconds"] = phase["seconds_per_step"] * phase["steps"]
        entry["unet_seconds"] = sum(phase["seconds"] for phase in entry["phases"])
        entry["flops"] = sum(phase["flops_per_step"] * phase["steps"] for phase in entry["phases"])
        entry["activation_bytes"] = max(phase["activation_bytes"] for phase in entry["phases"])
    for entry in entries.values():
        baseline = entries.get(entry["baseline"], {})
        if "unet_seconds" not in entry or "unet_seconds" not in baseline:
            continue
        entry["ratio"] = entry["unet_seconds"] / baseline["unet_seconds"]
        entry["ideal_ratio"] = entry["flops"] / baseline["flops"]
        entry["efficiency"] = entry["ideal_ratio"] / entry["ratio"]
        entry["activation_ratio"] = entry["activation_bytes"] / max(baseline["activation_bytes"], 1)
    report["targets"] = _targets(entries)


def _targets(entries: dict) -> dict:
    """The issue's targets, as numbers (None where a variant did not run)."""
    def get(name, key):
        return entries[name].get(key) if name in entries else None

    ours, theirs, hires = (get(name, "unet_seconds") for name in ("hidiffusion", "official", "hires-fix"))
    disabled = get("disabled", "ratio")
    engine = [get(name, "activation_ratio") for name in entries if VARIANTS[name].engine]
    return {
        "hidiffusion_efficiency": get("hidiffusion", "efficiency"),
        "ours_over_official": ours / theirs if ours and theirs else None,
        "ours_over_official_by_phase": {
            mine["name"]: mine["seconds_per_step"] / official["seconds_per_step"]
            for mine, official in zip(entries["hidiffusion"]["phases"], entries["official"]["phases"])
        } if ours and theirs else None,
        "vanilla_diffusers_over_vanilla": get("vanilla-diffusers", "ratio"),
        "disabled_overhead": disabled - 1 if disabled is not None else None,
        "activation_ratio": get("hidiffusion", "activation_ratio"),
        "max_engine_activation_ratio": max((ratio for ratio in engine if ratio is not None), default=None),
        "hidiffusion_over_hires_fix": ours / hires if ours and hires else None,
    }


# ----------------------------------------------------------------------------------------------
# Output: table, JSON, plot

def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """Markdown tables, readable in a terminal and pasteable into a README."""
    config, targets = report["config"], report["targets"]
    sampled = config["steps_per_phase"]
    lines = [f"HiDiffusion bench, {report['date']}: {report['model']} {config['width']}x{config['height']}, "
             f"batch {config['batch']}, {config['steps']} steps"
             + (f" (timed: the first {sampled} of each phase, times its steps)" if sampled else "")
             + f", {report.get('device', '?')} {report.get('dtype', '')} ({report.get('threads', '?')} threads), "
             f"torch {report['torch']}, median of {config['repeats']}, variants interleaved in one process",
             f"plan: {report['plan']}",
             f"command: {report['command']}",
             "",
             "| variant | vs | UNet s | ratio | ideal (FLOPs) | efficiency | peak activation MiB | activation ratio "
             "| by phase: s/step (×steps), activation MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for entry in report["variants"]:
        if entry["status"] != "ok":
            lines.append(f"| {entry['name']} | {entry['status']}: {entry['reason']} ||||||||")
            continue
        by_phase = ", ".join(f"{p['name']} {p['width']}x{p['height']} {p['seconds_per_step']:.3g} (×{p['steps']}) "
                             f"{p['activation_bytes'] / MIB:.0f}" for p in entry["phases"])
        lines.append(
            f"| {entry['name']} | {entry['baseline']} | {entry['unet_seconds']:.3g} | {_fmt(entry.get('ratio'), '.3f')} "
            f"| {_fmt(entry.get('ideal_ratio'), '.3f')} | {_fmt(entry.get('efficiency'), '.0%')} "
            f"| {entry['activation_bytes'] / MIB:.0f} | {_fmt(entry.get('activation_ratio'), '.2f')} | {by_phase} |")
    by_phase = targets["ours_over_official_by_phase"] or {}
    lines += ["",
              "like for like: ours/official " + _fmt(targets["ours_over_official"], ".3f")
              + "".join(f", {name} {ratio:.3f}" for name, ratio in by_phase.items())
              + "; vanilla-diffusers/vanilla " + _fmt(targets["vanilla_diffusers_over_vanilla"], ".3f"),
              "targets: HiDiffusion efficiency " + _fmt(targets["hidiffusion_efficiency"], ".0%") + " (>= 90 %); "
              "ours/official " + _fmt(targets["ours_over_official"], ".3f") + " (<= 0.95); "
              "disabled overhead " + _fmt(targets["disabled_overhead"], "+.1%") + " (<= 1 %); "
              "activation memory " + _fmt(targets["activation_ratio"], ".2f") + "x vanilla (<= 0.6 at 2048 px), "
              "at most " + _fmt(targets["max_engine_activation_ratio"], ".2f") + "x in any engine variant (<= 1); "
              "HiDiffusion/Hires. fix " + _fmt(targets["hidiffusion_over_hires_fix"], ".3f") + " (< 1)"]
    if config["profile"]:
        lines += format_profile(report)
    return "\n".join(lines)


def format_profile(report: dict) -> List[str]:
    """One row per variant and phase: the profiled call's seconds and each kind's share of them."""
    kinds = [*OP_KINDS, "other ops", OUTSIDE_OPS]
    lines = ["", "profile: one warm call per phase under torch.profiler, self time of its ops by kind, % of the call",
             "| variant | phase | call s | " + " | ".join(kinds) + " |", "|---|---|---:|" + "---:|" * len(kinds)]
    for entry in report["variants"]:
        for phase in entry["phases"] if entry["status"] == "ok" else ():
            profiled = phase["profile"]
            lines.append(f"| {entry['name']} | {phase['name']} | {profiled['seconds']:.3g} | "
                         + " | ".join(f"{profiled['groups'][kind] / profiled['seconds']:.0%}" for kind in kinds) + " |")
    return lines


def plot_report(report: dict, path: str) -> None:
    """Horizontal stacked bars: UNet seconds per variant, one segment per phase."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    entries = [e for e in report["variants"] if e["status"] == "ok"]
    names = list(dict.fromkeys(p["name"] for e in entries for p in e["phases"]))
    colours = dict(zip(names, plt.get_cmap("tab10").colors * 3))
    figure, axes = plt.subplots(figsize=(9, 0.6 * len(entries) + 1.6))
    for row, entry in enumerate(entries):
        left = 0.0
        for phase in entry["phases"]:
            axes.barh(row, phase["seconds"], left=left, color=colours[phase["name"]],
                      label=phase["name"] if phase["name"] in names else None)
            if phase["name"] in names:
                names.remove(phase["name"])         # one legend entry per phase name
            left += phase["seconds"]
        ratio = entry.get("ratio")
        axes.text(left, row, f" {left:.3g} s" + (f" ({ratio:.2f}x)" if ratio is not None else ""), va="center")
    axes.set_yticks(range(len(entries)), [e["name"] for e in entries])
    axes.invert_yaxis()
    axes.set_xlabel("UNet seconds (median)")
    config = report["config"]
    axes.set_title(f"{report['model']} {config['width']}x{config['height']}, {config['steps']} steps, "
                   f"{report.get('device', '')} {report.get('dtype', '')}")
    axes.margins(x=0.2)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

