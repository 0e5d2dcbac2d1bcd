"""A k-diffusion-style sampler and CFGDenoiser with the webui's counters, lag and callback order.

`Sampler.launch_sampling` sets `state.sampling_steps`/`sampling_step = 0` and the denoiser's `steps` and
`total_steps` (x2 for second-order samplers); `callback_state` sets `state.sampling_step = i` after each
step, so the model call of loop index i sees max(i-1, 0). `CFGDenoiser.forward` checks interrupt, applies
the refiner swap, calls the on_cfg_denoiser callbacks, runs the UNet once on cond+uncond, counts `step`.
"""
import torch

from modules import shared, sd_samplers_common
from modules.script_callbacks import CFGDenoiserParams, cfg_denoiser_callback
from modules.shared import state

SECOND_ORDER = {"Heun", "DPM2"}


def get_sigmas(steps):
    return torch.cat([torch.linspace(14.6, 0.03, steps), torch.zeros(1)])


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler
        self.p = None
        self.step = 0
        self.steps = self.total_steps = None

    def forward(self, x, sigma):
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        apply_refiner(self)
        model = shared.sd_model
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        cond, uncond = model.cond.expand(x.shape[0], -1, -1), model.uncond.expand(x.shape[0], -1, -1)
        params = CFGDenoiserParams(x_in, None, sigma_in, state.sampling_step, state.sampling_steps, cond, uncond, self)
        cfg_denoiser_callback(params)
        x_out = model.apply_model(params.x, params.sigma, torch.cat([params.text_cond, params.text_uncond]))
        denoised_cond, denoised_uncond = x_out.chunk(2)
        self.sampler.last_latent = denoised_cond
        self.step += 1
        return denoised_uncond + self.p.cfg_scale * (denoised_cond - denoised_uncond)


def apply_refiner(denoiser):
    """Swap to the refiner once step/total_steps reaches the switch point (refiner_switch_by_sample_steps)."""
    p = denoiser.p
    if p.refiner_model is None or getattr(p, "refiner_applied", False):
        return
    if denoiser.step / denoiser.total_steps < p.refiner_switch_at:
        return
    p.refiner_applied = True
    shared.sd_model = p.sd_model = p.refiner_model


class Sampler:
    def __init__(self, name="Euler"):
        self.name = name
        self.second_order = name in SECOND_ORDER
        self.model_wrap_cfg = CFGDenoiser(self)
        self.last_latent = None
        self.interrupt_at = None           # test hook: state.interrupt() after this loop index

    def initialize(self, p):
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.step = 0

    def callback_state(self, i):
        state.sampling_step = i
        if self.interrupt_at is not None and i >= self.interrupt_at:
            state.interrupt()

    def launch_sampling(self, steps, func):
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = steps * 2 if self.second_order else steps
        state.sampling_steps, state.sampling_step = steps, 0
        try:
            return func()
        except sd_samplers_common.InterruptedException:
            return self.last_latent

    def sample(self, p, x):
        self.initialize(p)
        sigmas = get_sigmas(p.steps)
        return self.launch_sampling(p.steps, lambda: self.loop(x * sigmas[0], sigmas))

    def sample_img2img(self, p, x, noise, steps):
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
        sigmas = get_sigmas(steps)[steps - t_enc - 1:]
        self.initialize(p)
        return self.launch_sampling(t_enc + 1, lambda: self.loop(x + noise * sigmas[0], sigmas))

    def loop(self, x, sigmas):
        model = self.model_wrap_cfg
        self.last_latent = x
        for i in range(len(sigmas) - 1):
            s, s_next = sigmas[i], sigmas[i + 1]
            d = (x - model(x, s.expand(x.shape[0]))) / s
            if self.second_order and s_next > 0:      # Heun: a second model call at the next sigma
                x_2 = x + d * (s_next - s)
                d = (d + (x_2 - model(x_2, s_next.expand(x.shape[0]))) / s_next) / 2
            x = x + d * (s_next - s)
            self.callback_state(i)
        return x
