"""Run by the webui at startup (and when installed from the Extensions tab): install what is missing.

The webui already ships einops and omegaconf; this only matters for unusual installs.
"""
import launch

REQUIREMENTS = {"einops": "einops", "omegaconf": "omegaconf"}     # import name -> pip requirement

missing = [requirement for name, requirement in REQUIREMENTS.items() if not launch.is_installed(name)]
if missing:
    launch.run_pip(f"install {' '.join(missing)}", f"sd-webui-hidiffusion requirements: {', '.join(missing)}")
