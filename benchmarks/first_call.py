"""One fresh process's first call of a case's value-and-gradient (run by ``run_all.py`` as a subprocess).

    python benchmarks/first_call.py IMPL CASE      # IMPL: tracegrad | hand | jax

Prints one JSON line of seconds: the imports (``import_s``, from the start of this script), the first
call (``first_s``: for tracegrad trace + autodiff + passes + codegen + Numba compile or cache load + the
run; for the hand-written code Numba's compile or cache load + the run; for JAX trace + XLA compile or
persistent-cache load + the run), the part of it before Numba runs (``prepare_s``: for tracegrad
``specialize``, i.e. trace to generated module, imported), and a second call (``second_s``); ``*_cpu_s``
are the same in process CPU time. Which caches are cold or warm is decided by the caller through the
environment (``TRACEGRAD_CACHE_DIR``, ``NUMBA_CACHE_DIR``, ``JAX_CACHE_DIR``).
"""
import time

T0, C0 = time.perf_counter(), time.process_time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402,F401  (thread settings before NumPy)
import cases  # noqa: E402


def main():
    impl, key = sys.argv[1], sys.argv[2]
    c = cases.case(key)
    prepare = None
    if impl == "tracegrad":
        prepare = lambda: c.tg_vg.specialize(*c.args)  # noqa: E731
        call = lambda: c.tg_vg(*c.args)  # noqa: E731
    elif impl == "hand":
        call = lambda: c.hand_vg(*c.args)  # noqa: E731
    elif impl == "jax":
        jax = cases._jax()
        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        call, _ = c.peers["JAX jit"](c.args)
    else:
        raise SystemExit(f"unknown implementation {impl!r}")
    out = {"import_s": time.perf_counter() - T0, "import_cpu_s": time.process_time() - C0}
    t, ct = time.perf_counter(), time.process_time()
    if prepare is not None:
        prepare()
    out["prepare_s"], out["prepare_cpu_s"] = time.perf_counter() - t, time.process_time() - ct
    call()
    out["first_s"], out["first_cpu_s"] = time.perf_counter() - t, time.process_time() - ct
    t = time.perf_counter()
    call()
    out["second_s"] = time.perf_counter() - t
    print(json.dumps(out))


if __name__ == "__main__":
    main()
