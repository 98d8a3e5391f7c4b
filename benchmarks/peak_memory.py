"""Peak memory of one value-and-gradient call, tracegrad against hand-written Numba (a subprocess of
``run_all.py``).

    MALLOC_MMAP_THRESHOLD_=4096 TRACEGRAD_TUNE_MALLOC=0 NUMBA_NRT_STATS=1 python benchmarks/peak_memory.py REPEATS CASE [CASE ...]

``tracemalloc`` does not see Numba's allocations (its runtime calls ``malloc`` directly), so this
measures the process's resident memory instead (Linux only): after warm-up calls, it reads ``VmRSS``,
resets the high-water mark (``echo 5 > /proc/self/clear_refs``), makes one call, and reads ``VmHWM``.
The difference is the peak extra memory of the call, its outputs included. For it to mean that, the
caller starts this process with a fixed ``malloc`` mmap threshold (``MALLOC_MMAP_THRESHOLD_=4096``) and
``TRACEGRAD_TUNE_MALLOC=0`` (otherwise tracegrad raises the threshold to 64 MiB at import, so that freed
temporaries stay resident for reuse: faster, but then the resident set no longer follows the live
arrays): every array of 4 KiB or more gets its own mapping and is returned to the system when freed, so
the resident size follows the live arrays (rounded up to 4 KiB pages); smaller blocks come from the heap
and may be reused unseen. The kernel updates the high-water mark in batches, so the resolution is about 64 KiB:
peaks below ~128 KiB are not meaningful. With ``NUMBA_NRT_STATS=1`` it also counts the arrays Numba's
runtime allocates per call (exact, at any size).

Prints one JSON line: case -> {"tracegrad": bytes, "hand": bytes, "outputs": bytes, "tracegrad_allocs":
count, "hand_allocs": count} (peaks are medians over REPEATS, tracegrad and hand-written alternating).
"""
import gc
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402,F401  (thread settings before NumPy)
import cases  # noqa: E402
import numpy as np  # noqa: E402


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def peak_of(fn, args) -> int:
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    result = fn(*args)
    peak = _status("VmHWM")
    del result
    return peak - before


def allocations(fn, args):
    """Arrays Numba's runtime allocates in one call (None unless NUMBA_NRT_STATS=1)."""
    from numba.core.runtime import rtsys
    try:
        before = rtsys.get_allocation_stats().alloc
        fn(*args)
        return rtsys.get_allocation_stats().alloc - before
    except RuntimeError:  # statistics are off
        return None


def main():
    repeats = int(sys.argv[1])
    out = {}
    for key in sys.argv[2:]:
        c = cases.case(key)
        for _ in range(3):  # compile or load, and let BLAS and the allocator settle
            c.tg_vg(*c.args)
            c.hand_vg(*c.args)
        samples = {"tracegrad": [], "hand": []}
        for _ in range(repeats):
            samples["tracegrad"].append(peak_of(c.tg_vg, c.args))
            samples["hand"].append(peak_of(c.hand_vg, c.args))
        outputs = sum(np.asarray(v).nbytes for v in c.hand_vg(*c.args))
        out[key] = {name: statistics.median(s) for name, s in samples.items()}
        out[key]["outputs"] = outputs
        out[key]["tracegrad_allocs"] = allocations(c.tg_vg, c.args)
        out[key]["hand_allocs"] = allocations(c.hand_vg, c.args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
