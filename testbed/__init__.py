"""Where the method is checked and measured, apart from the method itself.

`unets`: the real ldm/sgm UNets with random weights (full size or tiny twins), for the tests and the bench.
`official`: the official HiDiffusion on a diffusers twin of such a UNet, the oracle and a bench variant.
`bench`: `python -m testbed bench`, HiDiffusion's speed and memory against vanilla, the official code and
Hires. fix. None of it is imported by `hidiffusion/` or by the webui glue.
"""
