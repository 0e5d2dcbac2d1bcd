"""`python -m testbed bench`: how much faster and leaner HiDiffusion is, measured, not claimed.

Every variant samples the same schedule (steps, T1/T2 phases as the engine sets them) on identical
inputs: the same UNet weights, latents and conditioning from one seed. Only the UNet calls are timed.

* Like for like: every variant runs in this one process, on its own UNet object over one shared set of
  weight tensors (the diffusers twin of the official code included), with the same threads, warm-up
  and allocator. Calls are interleaved (v1 v2 v3, v1 v2 v3, ...) so that drift on a noisy machine
  hits every variant alike; each phase's seconds per step are the median over the repeats.
* Each phase of each variant first gets one untimed call (kernels are chosen per shape on the first
  call), run under torch.profiler: its peak activation memory is the highest level of the tensor
  bytes the call allocates and frees again, i.e. peak minus weights, inputs and caches that outlive it.
* `--steps-per-phase N` times only the first N steps of each phase and scales by the phase's steps.
* The ideal ratio is counted, not estimated: one UNet call per distinct phase runs under
  `torch.utils.flop_counter.FlopCounterMode` on a meta-device twin (no weights, no arithmetic),
  weighted by the phase's steps. Efficiency = ideal ratio / measured ratio (>100 %: faster than FLOPs say).
* `--profile`: one more call per phase under torch.profiler, its ops' self times grouped by ki

Modules: `variants` (what each variant runs: its passes, phases and the driver of its UNet calls), `run`
(measuring the calls, interleaved), `flops` (the ideal ratio), `report` (ratios, tables, plot), `cli`.
"""
