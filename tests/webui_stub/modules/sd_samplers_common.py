class InterruptedException(BaseException):
    """Raised by CFGDenoiser.forward on interrupt/skip; caught by Sampler.launch_sampling."""
