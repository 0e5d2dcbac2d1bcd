"""shared.state / shared.opts / shared.sd_model."""
import types


class State:
    def __init__(self):
        self.begin()

    def begin(self):
        self.interrupted = self.skipped = self.stopping_generation = False
        self.sampling_step = self.sampling_steps = 0

    def interrupt(self):
        self.interrupted = True


state = State()
opts = types.SimpleNamespace(batch_cond_uncond=True, infotext_skip_pasting=[])
sd_model = None
