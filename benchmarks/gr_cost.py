"""Cost of gradient regularization per training step: jaxfd.gr against plain SGD.

Rerun:
    python benchmarks/gr_cost.py              # 3 processes per (model, method), 5-10 minutes on 2 cores
    python benchmarks/gr_cost.py --quick      # one process each, shorter timing (smoke test)
    python benchmarks/gr_cost.py --pinned     # every worker on one core with one XLA thread (steadier)

One jitted training step (loss, regularised gradient by `fd.gr.value_and_gradient`,
`optax.sgd` update) per method, float32, on

* an MLP: 256 inputs, 3 hidden layers of width 512, 10 classes, batch 128
  (`eqx.nn.MLP`, ReLU, softmax cross-entropy), 0.67 M parameters;
* a small CNN: 3x32x32 images, conv 3->8 (3x3), conv 8->16 (3x3, stride 2),
  conv 16->32 (3x3, stride 2), global mean pool, linear 32->10, batch 128.

Methods: plain SGD (`jax.value_and_grad`), forward-difference GR
(2 gradients), central-difference GR (3 gradients), SAM (2 gradients) and
double-backprop GR (reverse mode through the gradient). Each (model, method)
runs in its own process, which (1) compiles the method's step and reads XLA's
memory analysis (temporary buffers), (2) runs it and records the process's peak
resident memory, then (3) times it interleaved with the plain SGD step compiled
in the same process (alternating blocks, medians), so the ratio to SGD is not
skewed by a slow process. The table reports, per method, the median over
processes of the per-process median step time and of the per-process ratio to
SGD (the median over the five alternating blocks of method time / SGD time),
the fastest step seen, the spread of the ratio over processes (max / min),
the XLA temporary memory and its ratio to SGD's, and the peak RSS. The JSON
also keeps the ratio of fastest steps per process.
Results: benchmarks/results/gr_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

MODELS = ["mlp", "cnn"]
METHODS = ["sgd", "forward", "central", "sam", "double_backprop"]
HYPER = {
    "forward": {"gamma": 0.01, "eps": 0.01},
    "central": {"gamma": 0.01, "eps": 0.01},
    "sam": {"eps": 0.05},
    "double_backprop": {"gamma": 0.01},
}
BATCH = 128


def build(model_name: str):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    key_model, key_x, key_y = jax.random.split(jax.random.key(0), 3)
    if model_name == "mlp":
        model = eqx.nn.MLP(256, 10, width_size=512, depth=3, activation=jax.nn.relu, key=key_model)
        x = jax.random.normal(key_x, (BATCH, 256), dtype=jnp.float32)
        apply = jax.vmap(model.__class__.__call__, in_axes=(None, 0))
    else:
        class CNN(eqx.Module):
            convs: list
            head: eqx.nn.Linear

            def __init__(self, key):
                k1, k2, k3, k4 = jax.random.split(key, 4)
                self.convs = [
                    eqx.nn.Conv2d(3, 8, 3, padding=1, key=k1),
                    eqx.nn.Conv2d(8, 16, 3, stride=2, padding=1, key=k2),
                    eqx.nn.Conv2d(16, 32, 3, stride=2, padding=1, key=k3),
                ]
                self.head = eqx.nn.Linear(32, 10, key=k4)

            def __call__(self, image):
                h = image
                for conv in self.convs:
                    h = jax.nn.relu(conv(h))
                return self.head(jnp.mean(h, axis=(1, 2)))

        model = CNN(key_model)
        x = jax.random.normal(key_x, (BATCH, 3, 32, 32), dtype=jnp.float32)
        apply = jax.vmap(CNN.__call__, in_axes=(None, 0))
    y = jax.random.randint(key_y, (BATCH,), 0, 10)
    return model, apply, x, y


def make_step(method: str, model, apply):
    import equinox as eqx
    import jax
    import optax

    import jaxfd as fd

    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    arrays = jax.tree_util.tree_map(lambda a: a.copy(), arrays)  # each step donates its own copy
    opt = optax.sgd(1e-2)

    def loss(a, x, y):
        logits = apply(eqx.combine(a, static), x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(a, opt_state, x, y):
        if method == "sgd":
            value, grad = jax.value_and_grad(loss)(a, x, y)
        else:
            value, grad = fd.gr.value_and_gradient(loss, a, x, y, method=method, **HYPER[method])
        updates, opt_state = opt.update(grad, opt_state, a)
        return optax.apply_updates(a, updates), opt_state, value

    return jax.jit(step, donate_argnums=(0, 1)), arrays, opt.init(arrays)


def worker(model_name: str, method: str, min_time: float, pinned: bool) -> None:
    if pinned:  # one core (taskset by the parent), one XLA thread: the steadiest ratios on a shared machine
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import equinox as eqx
    import jax

    model, apply, x, y = build(model_name)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))

    def prepare(name):
        fn, arrays, state = make_step(name, model, apply)
        t0 = time.perf_counter()
        compiled = fn.lower(arrays, state, x, y).compile()
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        holder = {"a": arrays, "s": state}

        def run():
            holder["a"], holder["s"], value = compiled(holder["a"], holder["s"], x, y)
            jax.block_until_ready(value)

        for _ in range(3):
            run()
        return run, compile_s, mem

    run, compile_s, mem = prepare(method)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the SGD reference exists
    run_sgd, _, mem_sgd = prepare("sgd") if method != "sgd" else (run, compile_s, mem)

    blocks, sgd_blocks = [], []
    for _ in range(5):  # alternating blocks: a slow phase of the machine hits both
        blocks.append(H.time_call(run, min_time=min_time / 5, warmup=0))
        sgd_blocks.append(H.time_call(run_sgd, min_time=min_time / 5, warmup=0))
    times = [b["median"] for b in blocks]
    sgd_times = [b["median"] for b in sgd_blocks]
    print(json.dumps({
        "model": model_name, "method": method, "params": int(n_params),
        "median": statistics.median(times), "min": min(b["min"] for b in blocks),
        "sgd_median": statistics.median(sgd_times), "sgd_min": min(b["min"] for b in sgd_blocks),
        "ratio": statistics.median(t / s for t, s in zip(times, sgd_times)),
        "ratio_of_min": min(b["min"] for b in blocks) / min(b["min"] for b in sgd_blocks),
        "temp_bytes": int(mem.temp_size_in_bytes), "sgd_temp_bytes": int(mem_sgd.temp_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "peak_rss_mib": peak_kib / 1024.0, "compile_s": compile_s, "pinned_single_thread": pinned,
    }), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one process each, shorter timing")
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--pinned", action="store_true",
                    help="run every worker on core 1 (taskset) with one XLA thread: steadier ratios, slower steps")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "gr_cost.json"))
    ap.add_argument("--worker", nargs=4, metavar=("MODEL", "METHOD", "MIN_TIME", "PINNED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], float(args.worker[2]), args.worker[3] == "1")
        return
    processes = args.processes or (1 if args.quick else 3)
    min_time = 1.0 if args.quick else 3.0
    models = args.models.split(",")
    methods = args.methods.split(",")
    work = [[m, meth, str(min_time), "1" if args.pinned else "0"] for m in models for meth in methods]
    records = H.run_worker_processes(os.path.abspath(__file__), work, processes,
                                     pin_core=1 if args.pinned else None)
    summary = []
    for model_name in models:
        rs = [r for r in records if r["model"] == model_name]
        if not rs:
            continue
        print(f"\n## {model_name.upper()} ({rs[0]['params']:,} parameters), batch {BATCH}, float32, "
              f"{processes} process(es) per method{', pinned to one core, one XLA thread' if args.pinned else ''}\n")
        rows = []
        for method in methods:
            mr = [r for r in rs if r["method"] == method]
            if not mr:
                continue
            entry = {
                "model": model_name, "method": method, "processes": len(mr),
                "median_s": statistics.median(r["median"] for r in mr),
                "ratio_to_sgd": statistics.median(r["ratio"] for r in mr),
                "min_s": min(r["min"] for r in mr),
                "min_ratio_to_sgd": statistics.median(r["ratio_of_min"] for r in mr),
                "temp_mib": statistics.median(r["temp_bytes"] for r in mr) / 2**20,
                "temp_ratio_to_sgd": statistics.median(r["temp_bytes"] / max(r["sgd_temp_bytes"], 1) for r in mr),
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in mr),
                "compile_s": statistics.median(r["compile_s"] for r in mr),
                "spread": max(r["ratio"] for r in mr) / min(r["ratio"] for r in mr),
            }
            summary.append(entry)
            rows.append([method, H.format_time(entry["median_s"]), f"{entry['ratio_to_sgd']:.2f}x",
                         H.format_time(entry["min_s"]), f"{entry['spread']:.2f}", f"{entry['temp_mib']:.1f}", f"{entry['temp_ratio_to_sgd']:.2f}x",
                         f"{entry['peak_rss_mib']:.0f}", f"{entry['compile_s']:.1f} s"])
        H.print_table(["method", "median / step", "vs SGD", "min / step", "ratio spread", "XLA temp MiB", "temp vs SGD",
                       "peak RSS MiB", "compile"], rows)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": H.machine_info(), "processes": processes, "pinned_single_thread": args.pinned,
                   "hyperparameters": HYPER,
                   "records": records, "summary": summary}, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
