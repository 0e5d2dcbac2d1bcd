"""process_images with the webui's hook order (webui-internals.md §2) for txt2img, hires fix and img2img."""
import torch

from modules import scripts, sd_samplers, shared
from modules.infotext_utils import quote
from modules.shared import state


class StableDiffusionProcessing:
    def __init__(self, sd_model=None, width=256, height=256, steps=4, seed=1, batch_size=1, n_iter=1,
                 sampler_name="Euler", cfg_scale=5.0, script_runner=None, script_args=(), denoising_strength=0.75,
                 refiner_model=None, refiner_switch_at=0.5, interrupt_at=None, **kwargs):
        self.sd_model = sd_model if sd_model is not None else shared.sd_model
        self.width, self.height, self.steps, self.seed = width, height, steps, seed
        self.batch_size, self.n_iter, self.sampler_name, self.cfg_scale = batch_size, n_iter, sampler_name, cfg_scale
        self.scripts, self.script_args = script_runner, tuple(script_args)
        self.denoising_strength = denoising_strength
        self.refiner_model, self.refiner_switch_at = refiner_model, refiner_switch_at
        self.interrupt_at = interrupt_at
        self.extra_generation_params = {}
        self.override_settings = {}
        self.is_hr_pass = False
        self.all_seeds = self.seeds = None
        self.__dict__.update(kwargs)

    def init(self):
        pass

    def make_sampler(self):
        sampler = sd_samplers.Sampler(self.sampler_name)
        sampler.interrupt_at = self.interrupt_at
        self.sampler = sampler
        return sampler

    def noise(self, width, height):
        generator = torch.Generator().manual_seed(self.seeds[0])
        return torch.randn(self.batch_size, 4, height // 8, width // 8, generator=generator)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, enable_hr=False, hr_scale=2.0, hr_second_pass_steps=0, **kwargs):
        super().__init__(**kwargs)
        self.enable_hr, self.hr_scale, self.hr_second_pass_steps = enable_hr, hr_scale, hr_second_pass_steps

    def init(self):
        self.hr_upscale_to_x, self.hr_upscale_to_y = int(self.width * self.hr_scale), int(self.height * self.hr_scale)

    def sample(self):
        x = self.noise(self.width, self.height)
        self.scripts.process_before_every_sampling(self, x=x, noise=x, c=None, uc=None)
        samples = self.make_sampler().sample(self, x)
        if not self.enable_hr:
            return samples
        return self.sample_hr_pass(samples)

    def sample_hr_pass(self, samples):
        if state.interrupted:
            return samples
        self.is_hr_pass = True
        size = (self.hr_upscale_to_y // 8, self.hr_upscale_to_x // 8)
        samples = torch.nn.functional.interpolate(samples, size=size, mode="nearest")
        noise = self.noise(self.hr_upscale_to_x, self.hr_upscale_to_y)
        self.scripts.before_hr(self)
        self.scripts.process_before_every_sampling(self, x=samples, noise=noise, c=None, uc=None)
        steps = self.hr_second_pass_steps or self.steps
        samples = self.make_sampler().sample_img2img(self, samples, noise, steps)
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_latent=None, **kwargs):
        super().__init__(**kwargs)
        self.init_latent = init_latent

    def sample(self):
        noise = self.noise(self.width, self.height)
        self.scripts.process_before_every_sampling(self, x=self.init_latent, noise=noise, c=None, uc=None)
        return self.make_sampler().sample_img2img(self, self.init_latent, noise, self.steps)


class Processed:
    def __init__(self, p, images, infotexts):
        self.images, self.infotexts = images, infotexts
        self.extra_generation_params = {k: (None if callable(v) else v) for k, v in p.extra_generation_params.items()}
        self.info = infotexts[0] if infotexts else ""


def create_infotext(p):
    generation_params = {"Steps": p.steps, "Sampler": p.sampler_name, "Seed": p.seeds[0],
                         "Size": f"{p.width}x{p.height}", **p.extra_generation_params}
    text = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in generation_params.items() if v is not None)
    return f"a prompt\nNegative prompt: \n{text}"


def process_images(p):
    state.begin()
    p.scripts.before_process(p)
    try:
        return process_images_inner(p)
    finally:
        pass        # the webui restores override_settings here; scripts get nothing


def process_images_inner(p):
    p.all_seeds = [p.seed + i for i in range(p.n_iter * p.batch_size)]
    p.scripts.process(p)
    p.init()
    images, infotexts = [], []
    for n in range(p.n_iter):
        if state.interrupted:
            break
        p.seeds = p.all_seeds[n * p.batch_size:(n + 1) * p.batch_size]
        samples = p.sample()
        p.scripts.post_sample(p, scripts.PostSampleArgs(samples))
        images.append(samples)
        infotexts.append(create_infotext(p))
        if state.interrupted:
            break
    processed = Processed(p, images, infotexts)
    p.scripts.postprocess(p, processed)
    return processed
