"""HiDiffusion in the AUTOMATIC1111 webui: the Script and the callbacks, nothing else.

The glue is the `hidiffusion_webui` package and the method the `hidiffusion` package, both beside this
folder. They are imported here, at load time, because the webui puts the extension folder on sys.path
only while it loads this file. The callbacks are registered here too: on Reload UI the webui clears every
callback and runs this file again, while the packages stay imported.
"""
import hidiffusion
from hidiffusion_webui import job, ui, xyz
from hidiffusion_webui.options import TITLE
from modules import script_callbacks, scripts


class HiDiffusionScript(scripts.Script):
    section = "accordions"   # beside Hires. fix and Refiner
    create_group = False     # a direct child of that row, which gives an open accordion the row's width

    def __init__(self):
        super().__init__()
        self.panel = ui.Panel(self)

    def title(self):
        return TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_component(self, component, **kwargs):
        self.panel.after_component(component, kwargs.get("elem_id"))

    def ui(self, is_img2img):
        controls, self.infotext_fields, self.paste_field_names = self.panel.build()
        return controls

    # --- processing hooks, in the webui's call order ---

    def before_process(self, p, *args):
        hidiffusion.remove_all()     # heals a run that died before postprocess

    def process(self, p, *args):
        job.start(p, args)

    def process_before_every_sampling(self, p, *args, **kwargs):
        job.end_pass(p)

    def before_hr(self, p, *args):
        job.end_pass(p)

    def post_sample(self, p, ps, *args):
        job.end_pass(p)

    def postprocess(self, p, processed, *args):
        job.finish(p)


xyz.add_axis_options()
script_callbacks.on_after_component(ui.refresh_on_settings)
script_callbacks.on_before_ui(xyz.add_axis_options)
script_callbacks.on_cfg_denoiser(job.on_cfg_denoiser)
script_callbacks.on_script_unloaded(hidiffusion.remove_all)
