"""HiDiffusion in the AUTOMATIC1111 webui (1.10.x): the glue between the webui and the `hidiffusion` engine.

`options` (the one settings table: controls, API args, infotext keys, XYZ axes), `job` (one generation's
passes, driven from the denoiser callback), `compatibility` (ControlNet and Lora meeting the patch),
`infotext`, `ui` (the accordion and its Auto line), `xyz` (the grid's axes). `scripts/hidiffusion_script.py`
declares the Script and registers the callbacks. Importable only inside the webui (`modules`, gradio).
"""
