"""A test-only webui extension: records what the webui really ran, so the host tests compare facts.

Installed by the harness beside sd-webui-hidiffusion, in the A1111 webui and in Forge; never shipped. It
observes and changes nothing unless a test asks it to (a pause to interrupt at a known call, an injected
failure inside the UNet):

* every UNet call: the denoiser's sigma (or timestep), the timestep the UNet got, the pass, the shape of
  every skip (input block outputs), the input shapes of every self-attention (attn1), and any place
  where the webui's or ControlNet's `cat`/`aligned_adding` had to resize a mismatched tensor;
* the state of every loaded model: hooks other than the probe's own, instance `forward` overrides,
  the geometry of every Downsample conv, and a digest of the parameter names.

Routes (JSON): POST /hidiffusion-probe/reset {pause_at_call, raise_at_call}, GET .../calls,
GET .../state, GET .../paused, POST .../resume, POST .../train (what training runs, without scripts),
GET .../extensions (the extensions the webui loaded), GET .../xyz-choices (what the XYZ grid's value
dropdown lists for each HiDiffusion axis).
"""
import hashlib
import os
import sys
import threading
import weakref

from modules import extensions, script_callbacks, sd_models, shared

NO_DENOISER = dict(sigma=None, denoiser_step=None, hr=False, batch=None, model=None)   # a UNet call outside sampling
state = {"calls": [], "pause_at_call": None, "raise_at_call": None, "denoiser": NO_DENOISER}
paused, resume = threading.Event(), threading.Event()
probe_hooks = weakref.WeakKeyDictionary()      # module -> ids of the probe's own hook handles
hooked_unets = weakref.WeakSet()


def unet_of(model):
    """The UNet of a loaded model: Forge keeps it in `forge_objects`, A1111 in `model.diffusion_model`."""
    forge = getattr(model, "forge_objects", None)
    return forge.unet.model.diffusion_model if forge is not None else model.model.diffusion_model


def loaded_models():
    """The models with a UNet: Forge holds one (Forge Classic keeps A1111's list, empty), and a placeholder
    until its first generation loads it."""
    loaded = getattr(sd_models.model_data, "loaded_sd_models", None) or [sd_models.model_data.sd_model]
    return [m for m in loaded if m is not None and (hasattr(m, "forge_objects") or hasattr(m, "model"))]


def shape(tensor):
    return list(tensor.shape)


def keep(module, handle):
    probe_hooks.setdefault(module, set()).add(handle.id)


def current_call():
    return state["calls"][-1] if state["calls"] else None


def hook_unet(unet):
    if unet in hooked_unets:
        return
    hooked_unets.add(unet)

    def before(module, args, kwargs):
        x = args[0]
        t = args[1] if len(args) > 1 else kwargs.get("timesteps")
        record = dict(index=len(state["calls"]), x=shape(x), t=float(t.flatten()[0]), skips=[], middle=None,
                      attn1={}, mismatches=[], names=names(module), **state["denoiser"])
        state["calls"].append(record)
        if state["raise_at_call"] == record["index"]:
            raise RuntimeError("hidiffusion probe: failure injected inside the UNet")

    keep(unet, unet.register_forward_pre_hook(before, with_kwargs=True))
    # A skip is read as the input of the next block: forward hooks of the block itself may run before
    # HiDiffusion's, which can still change the output. A block's input is its first layer's (ComfyUI-style
    # UNets, in Forge Classic, run the layers without calling the block).
    for block in list(unet.input_blocks)[1:] + [unet.middle_block]:
        keep(block[0], block[0].register_forward_pre_hook(
            lambda module, args: current_call()["skips"].append(shape(args[0])[-2:])))
    keep(unet.output_blocks[0][0], unet.output_blocks[0][0].register_forward_pre_hook(
        lambda module, args: current_call().__setitem__("middle", shape(args[0])[-2:])))
    for side, blocks in (("in", unet.input_blocks), ("out", unet.output_blocks)):
        for index, block in enumerate(blocks):
            for name, module in block.named_modules():
                if name.endswith("attn1"):
                    key = f"{side}{index}.{name.split('.')[-2]}"
                    keep(module, module.register_forward_hook(
                        lambda module, args, output, key=key:
                        current_call()["attn1"].setdefault(key, []).append(shape(args[0]))))


def watch_resizes():
    """Record every silent resize of the webui's and ControlNet's `cat` and ControlNet's `aligned_adding`."""
    def mismatch(kind, a, b):
        if a.shape[-2:] != b.shape[-2:] and current_call() is not None:
            current_call()["mismatches"].append([kind, shape(a), shape(b)])

    def recording_cat(original):
        def cat(tensors, *args, **kwargs):
            if len(tensors) == 2:
                mismatch("cat", *tensors)
            return original(tensors, *args, **kwargs)
        return cat

    def recording_adding(original):
        def aligned_adding(base, x, require_channel_alignment):
            if not isinstance(x, float):
                mismatch("aligned_adding", base, x)
            return original(base, x, require_channel_alignment)
        return aligned_adding

    from modules import sd_hijack_unet
    if not hasattr(sd_hijack_unet, "th"):     # Forge: a mismatched cat raises, ControlNet prints a warning
        return
    hijacks = [sd_hijack_unet.th]
    controlnet_hook = next((m for m in list(sys.modules.values())
                            if getattr(m, "__file__", "") and m.__file__.endswith(os.path.join("scripts", "hook.py"))
                            and hasattr(m, "aligned_adding")), None)
    if controlnet_hook is not None:
        hijacks.append(controlnet_hook.th)
        if not hasattr(controlnet_hook.aligned_adding, "probe"):
            controlnet_hook.aligned_adding = recording_adding(controlnet_hook.aligned_adding)
            controlnet_hook.aligned_adding.probe = True
    for hijack in hijacks:
        if "cat" not in vars(hijack):
            hijack.cat = recording_cat(type(hijack).cat.__get__(hijack))


def on_cfg_denoiser(params):
    denoiser = params.denoiser
    p = getattr(denoiser, "p", None)
    state["denoiser"] = dict(sigma=float(params.sigma.flatten()[0]), denoiser_step=denoiser.step,
                             hr=bool(getattr(p, "is_hr_pass", False)), batch=params.x.shape[0],
                             model=getattr(getattr(shared.sd_model, "sd_checkpoint_info", None), "model_name", None))
    hook_unet(unet_of(shared.sd_model))
    watch_resizes()
    if state["pause_at_call"] == denoiser.step:
        state["pause_at_call"] = None
        paused.set()
        resume.wait(120)
        resume.clear()
        paused.clear()


def names(unet):
    """Digests of the parameter names and state_dict keys: what LoRA and checkpoint loading match on."""
    digest = lambda keys: hashlib.sha256("\n".join(keys).encode()).hexdigest()  # noqa: E731
    return [digest(n for n, _ in unet.named_parameters()), digest(unet.state_dict().keys())]


def model_state(model):
    unet = unet_of(model)
    foreign_hooks = []
    for name, module in unet.named_modules():
        own = probe_hooks.get(module, set())
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
            for key in getattr(module, kind):
                if key not in own:
                    foreign_hooks.append(f"{name or '<unet>'} {kind}")
    downsample_convs = {name: [list(m.stride), list(m.padding), list(m.dilation)]
                        for name, m in unet.named_modules() if name.endswith(".op")}
    return dict(checkpoint=getattr(model.sd_checkpoint_info, "model_name", None), foreign_hooks=foreign_hooks,
                forward_overrides=[n or "<unet>" for n, m in unet.named_modules() if "forward" in vars(m)],
                downsample_convs=downsample_convs, names=names(unet))


def on_app_started(demo, app):
    @app.post("/hidiffusion-probe/reset")
    def reset(options: dict = None):
        options = options or {}
        state.update(calls=[], denoiser=NO_DENOISER, pause_at_call=options.get("pause_at_call"),
                     raise_at_call=options.get("raise_at_call"))
        return {}

    @app.get("/hidiffusion-probe/calls")
    def calls():
        return state["calls"]

    @app.get("/hidiffusion-probe/state")
    def models():
        return [model_state(m) for m in loaded_models()]

    @app.get("/hidiffusion-probe/extensions")
    def active_extensions():
        return [extension.name for extension in extensions.active()]

    @app.get("/hidiffusion-probe/xyz-choices")
    def xyz_choices():
        from modules import scripts
        xyz = next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")
        return {axis.label: axis.choices() for axis in xyz.axis_options
                if axis.label.startswith("HiDiffusion") and axis.choices is not None}

    @app.get("/hidiffusion-probe/paused")
    def is_paused():
        return {"paused": paused.is_set()}

    @app.post("/hidiffusion-probe/train")
    def train():
        """The two ways textual-inversion training reaches the UNet, neither through a script: one
        training forward (`sd_model.forward(latent, cond)`, a loss) and a preview (`process_images` on a
        `p` without scripts). The webui's own training loop cannot start with torch 2.13 here (its
        GroupedBatchSampler passes data_source to Sampler.__init__, which no longer takes it)."""
        import torch
        from modules import processing
        model = shared.sd_model
        shared.state.begin(job="train_embedding")       # as the webui's training entry points do
        with torch.no_grad():
            latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
            loss = model.forward(latent, model.cond_stage_model(["a house"]))[0]
        preview = processing.StableDiffusionProcessingTxt2Img(
            sd_model=model, prompt="a house", steps=3, width=128, height=128, do_not_save_grid=True,
            do_not_save_samples=True, do_not_reload_embeddings=True)
        assert preview.scripts is None
        processing.process_images(preview)
        shared.state.end()
        return {"loss": float(loss)}

    @app.post("/hidiffusion-probe/resume")
    def resume_sampling():
        resume.set()
        return {}


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_app_started(on_app_started)
