"""One generation: a Job on `p`, one Pass per sampling pass (first pass, hires pass, img2img).

Per pass, the pass's size and the UNet loaded at that moment give a Plan; the patch is applied at the
pass's first denoiser call (`on_cfg_denoiser`), driven on every call, and removed when the pass ends or no
longer needs it. Stale patches (an exception skips `postprocess`) are healed at the next run and on script
unload.
"""
import dataclasses
import weakref
from typing import Optional

import hidiffusion
from modules import shared

from .compatibility import controlnet_units, fit_extensions, raunet_conflict
from .host import unet_of
from .infotext import clear_infotext, fail, write_plan, write_request
from .options import KEY, TITLE, engine_settings, read_args

JOB = "hidiffusion_job"            # attribute of `p` holding the running Job
LATENT_SCALE = 8


def current_unet(p):
    model = shared.sd_model if shared.sd_model is not None else p.sd_model   # the refiner swaps shared.sd_model
    return unet_of(model)


def noise_levels(p, denoiser):
    """The noise level at each step of the pass being sampled, highest first: sigmas for k-diffusion
    samplers, timesteps for DDIM/PLMS/UniPC. Taken from the sampler's own schedule functions with the
    arguments the webui passes them, so every sampler, scheduler and img2img strength is covered;
    None for a sampler that has neither."""
    from modules import processing, sd_samplers_common
    sampler = getattr(denoiser, "sampler", None)
    hires = getattr(p, "is_hr_pass", False)
    steps = (p.hr_second_pass_steps or p.steps) if hires else p.steps
    img2img = hires or isinstance(p, processing.StableDiffusionProcessingImg2Img)
    if img2img:
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps if hires else None)
    if hasattr(sampler, "get_sigmas"):          # one model call per sigma, except the final 0
        sigmas = sampler.get_sigmas(p, steps)
        return (sigmas[steps - t_enc - 1:] if img2img else sigmas)[:-1].tolist()
    if hasattr(sampler, "get_timesteps"):       # the loop runs from the last timestep down to the second
        timesteps = sampler.get_timesteps(p, steps)
        return (timesteps[:t_enc] if img2img else timesteps)[1:].flip(0).tolist()
    return None


def snapped_size(width, height):
    """The size the webui samples for a requested width and height (its latent is a size // 8)."""
    return tuple(max(LATENT_SCALE, int(v) // LATENT_SCALE * LATENT_SCALE) for v in (width, height))


def pixel_size(latent):
    return latent.shape[-1] * LATENT_SCALE, latent.shape[-2] * LATENT_SCALE


class Pass:
    """One sampling pass (first pass, hires pass, img2img) and how far its sampler has come."""

    def __init__(self, kind, denoiser, width, height, levels):
        self.kind, self.denoiser, self.width, self.height = kind, denoiser, width, height
        self.levels = levels        # noise level of each step, highest first (None: count calls instead)
        self.step = 0               # the furthest step reached: Restart and PLMS revisit higher noise
        self.unet = None            # weakref to the UNet this pass saw last
        self.patch = None
        self.lllite = []            # ControlNet-LLLite modules whose conditioning follows the phase
        self.finished = False

    def advance(self, params):
        """(step, steps) of this denoiser call. A call at noise level s belongs to the last step whose
        level is >= s: one-call-per-step samplers get their loop index, and every sampler (second order,
        Restart, DPM adaptive) switches at the same noise level, `step < int(steps * T1)` as officially."""
        if self.levels:
            level = float(params.sigma.flatten()[0]) * (1 - 1e-5)      # float32 round-off of the same value
            step, total = sum(1 for x in self.levels if x >= level) - 1, len(self.levels)
        else:
            denoiser = params.denoiser
            step, total = denoiser.step * denoiser.steps // max(denoiser.total_steps, 1), denoiser.steps
        self.step = min(max(self.step, step), total - 1)
        return self.step, total


class Job:
    def __init__(self, p, values, settings):
        self.values, self.settings = values, settings
        self.current: Optional[Pass] = None
        self.notes = {}
        self.printed = set()
        self.p = weakref.ref(p)

    def end_pass(self):
        if self.current is not None:
            self.remove_patch(self.current)
        self.current = None

    def remove_patch(self, run):
        """Take the patch off this pass's UNet, saying which windows the host kept global and why."""
        if run.patch is None:
            return
        windows = run.patch.window_attention
        for reason, blocks in (windows.left_global.items() if windows is not None else ()):
            self.note(run, f"MSW-MSA global in {','.join(blocks)}: {reason}")
        run.patch.remove()
        run.patch = None

    def denoise(self, p, params):
        kind = "hires pass" if getattr(p, "is_hr_pass", False) else "first pass"
        if self.current is None or self.current.kind != kind or self.current.denoiser is not params.denoiser:
            self.end_pass()
            self.current = Pass(kind, params.denoiser, *pixel_size(params.x), noise_levels(p, params.denoiser))
        run = self.current
        if run.finished:
            return
        unet = current_unet(p)
        if run.unet is None or run.unet() is not unet:       # first call of the pass, or the refiner swapped
            self.remove_patch(run)
            run.unet = weakref.ref(unet)
            run.patch = self.attach(p, run, unet)
            if run.patch is None:
                run.finished = True
                return
        before = run.patch.phase
        phase = run.patch.set_step(*run.advance(params))
        if phase != before:
            for module in run.lllite:       # its cached conditioning has the previous phase's token count
                module.cond_emb = None
        if not (phase.rad or phase.ca or self.settings.window_attention):   # RAU-Net is over for this pass
            self.remove_patch(run)
            run.finished = True

    def attach(self, p, run, unet):
        """Resolve and apply for this pass and UNet, or return None and say why not."""
        wanted = self.values["passes"]
        if wanted != "Both" and wanted.lower() != run.kind:
            return self.skip(run, f"not applied: set to {wanted.lower()} only")
        control = controlnet_units(p, unet)
        try:
            architecture = hidiffusion.detect(unet)
            plan = hidiffusion.resolve(architecture, self.settings, run.width, run.height)
            conflict = raunet_conflict(unet, plan)
            if conflict and plan.settings.raunet:
                self.note(run, f"RAU-Net off: {conflict}")
                plan = hidiffusion.resolve(architecture, dataclasses.replace(self.settings, raunet=False),
                                           run.width, run.height)
                if not plan.settings.window_attention:
                    return self.skip(run, f"not applied: RAU-Net off ({conflict}) and MSW-MSA off")
        except ValueError as e:    # UnsupportedModel, or a preset that does not fit this UNet
            return self.skip(run, f"not applied: {e}")
        if self.values["native_guard"] and max(run.width, run.height) <= plan.native_resolution:
            return self.skip(run, f"not applied: {run.width}x{run.height} is not above the native "
                                  f"{plan.native_resolution} px")
        started = shared.state.time_start        # a new task (the next generation, training) starts anew
        patch = hidiffusion.apply(unet, plan, seed=image_seeds(p),
                                  guard=lambda: shared.state.time_start == started)
        run.lllite = fit_extensions(patch, control, unet, plan)
        for adjustment in plan.notes:
            self.note(run, adjustment)
        write_plan(p, plan)
        self.say(f"{run.kind} {run.width}x{run.height}: {plan.describe()}")
        return patch

    def skip(self, run, reason):
        self.note(run, reason)
        self.say(f"{run.kind} {run.width}x{run.height}: {reason}")
        return None

    def note(self, run, text):
        self.notes[f"{run.kind} {run.width}x{run.height}: {text}"] = None
        p = self.p()
        if p is not None:
            p.extra_generation_params[KEY["note"]] = "; ".join(self.notes)

    def say(self, line):
        if line not in self.printed:   # once per job, not once per batch
            self.printed.add(line)
            print(f"{TITLE}: {line}")


def image_seeds(p):
    """The seed of each image of the batch being sampled: each image draws its own window shifts, so it
    can be made again alone from its seed, as the webui promises."""
    seeds = getattr(p, "seeds", None) or [getattr(p, "seed", 0)]
    return [int(seed) for seed in seeds]


# --- the webui's processing hooks and its denoiser callback, in the webui's call order ---------------------

def start(p, args):
    """`process`: read this run's settings and put a Job on `p`, or say why not."""
    clear_infotext(p)
    setattr(p, JOB, None)
    try:
        values = read_args(p, args)
        if not values["enable"]:
            return
        settings = engine_settings(values)
    except ValueError as e:
        return fail(p, f"invalid settings: {e}")
    if not (settings.raunet or settings.window_attention):
        return fail(p, "RAU-Net and MSW-MSA are both off")
    write_request(p, values)
    setattr(p, JOB, Job(p, values, settings))


def end_pass(p):
    job = getattr(p, JOB, None)
    if job is not None:
        job.end_pass()


def finish(p):
    """`postprocess`: the last pass is over; nothing of the job stays on `p` or on any UNet."""
    end_pass(p)
    setattr(p, JOB, None)
    hidiffusion.remove_all()


def on_cfg_denoiser(params):
    p = getattr(params.denoiser, "p", None)
    job = getattr(p, JOB, None)
    if job is None:     # sampling without our job (also without scripts: training previews): heal first
        hidiffusion.remove_all()
        return
    try:
        job.denoise(p, params)
    except Exception as e:    # never break sampling: restore the UNet and go on without HiDiffusion
        job.end_pass()
        setattr(p, JOB, None)
        hidiffusion.remove_all()
        fail(p, f"{type(e).__name__}: {e}")
