"""Measuring one UNet call: its peak activation memory, and where its time goes by kind of op."""
import itertools

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile, record_function

# --profile: profiler op names -> kind, by the first kind with a fragment in the name; the rest are "other ops".
OP_KINDS = {
    "convolution": ("conv",),
    "attention": ("attention",),
    "linear": ("linear", "mm"),
    "normalization": ("norm",),
    "resampling": ("upsample", "pool"),
    "gathers": ("index_select", "roll"),
    "copies": ("copy", "clone", "contiguous", "aten::cat"),
}
OUTSIDE_OPS = "Python and dispatch"      # the call's time in no op: module code, hooks, the framework
CALL_LABEL = "UNet call"


def peak_activation(call, device: torch.device) -> int:
    """Peak bytes of the tensors that `call()` allocates on `device` and frees again: its activations.

    What the call keeps (a cache filled on a first call, like MSW-MSA's token orders) is not counted,
    nor is anything allocated before it (weights, inputs): peak minus what outlives the call.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        call()
    changes = []        # (time, address, signed bytes) of every allocation and free on the device

    def collect(event):
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == device.type:
            changes.append((event.start_time_ns, event.extra_fields.ptr, event.extra_fields.alloc_size))
        for child in event.children:
            collect(child)

    for root in profiler.profiler.kineto_results.experimental_event_tree():
        collect(root)
    changes.sort(key=lambda change: change[0])
    allocated, transient = {}, set()      # address -> index of its allocation; indices of paired changes
    for index, (_, address, size) in enumerate(changes):
        if size > 0:
            allocated[address] = index
        elif address in allocated:
            transient.update((allocated.pop(address), index))
    sizes = (size for index, (_, _, size) in enumerate(changes) if index in transient)
    return max(itertools.accumulate(sizes, initial=0))


def op_kind(name: str) -> str:
    return next((kind for kind, fragments in OP_KINDS.items() if any(f in name for f in fragments)), "other ops")


def profile_call(call) -> dict:
    """Seconds of one call under torch.profiler: `seconds` in all, `groups` by kind of op. Self times
    (an op's time minus its child ops'), so nothing counts twice and the groups add up to the call."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        with record_function(CALL_LABEL):
            call()
    groups = dict.fromkeys([*OP_KINDS, "other ops", OUTSIDE_OPS], 0.0)
    seconds = 0.0
    for op in profiler.key_averages():
        if op.key == CALL_LABEL:
            seconds = op.cpu_time_total / 1e6
        groups[OUTSIDE_OPS if op.key == CALL_LABEL else op_kind(op.key)] += op.self_cpu_time_total / 1e6
    return dict(seconds=seconds, groups=groups)
