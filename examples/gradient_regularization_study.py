"""Finite differences in parameter space on jaxfd simulations: a surrogate study and a black-box fit.

Run it from anywhere once jaxfd is installed:

    python examples/gradient_regularization_study.py            # about 3 minutes on 2 CPU cores
    python examples/gradient_regularization_study.py --small    # a smoke test in about 40 s
    python examples/gradient_regularization_study.py --seeds 0 1 2 --out-dir /tmp/study

Part A, gradient regularization. The data are the time-0.5 flow map of 1-D
viscous Burgers, u_t + (u^2/2)_x = nu u_xx on a periodic grid of 64 cells
(`fd.models.burgers`, WENO5 fluxes, RK4 in `fd.simulate`), generated with
`jax.vmap` over random smooth initial states. A small equinox MLP surrogate
(64 -> 128 -> 128 -> 64, GELU, residual: u(T) ~ u0 + MLP(u0)) is trained on
128 pairs with SGD + momentum (minibatches of 16, 4000 steps), its gradient
given by plain SGD, SAM, forward- and backward-difference GR, double-backprop
GR and flooding (`fd.gr.value_and_gradient`), and tested on 1024 held-out
pairs (relative L2 error). Each method runs with the same seeds; the table
gives the mean and spread over seeds and the time per training step.

Part B, zeroth-order estimators. The parameters theta (6 cosine modes of the
log-diffusivity) of a 1-D heat equation u_t = (k(x; theta) u_x)_x
(`fd.models.heat`, Dirichlet walls, RK4) are fitted to snapshots made with
theta_true, treating the simulation as a black box: ZO-SGD with the
coordinate-wise and the randomized (unit-sphere) estimators, forward gradients
(one jvp per tangent) and zeroth-order Frank-Wolfe over the box [-0.6, 0.6]^6,
against reverse-mode gradients (`jax.grad` through `fd.simulate`), all with the
same `fd.zo.minimize` loop and the same number of steps. The step size of
gradient descent is 1/L with L the largest Hessian eigenvalue at the start,
found by power iteration on `fd.zo.hvp`; the random estimators get it scaled by
their variance (q/(d + q - 1) and K/(d + K + 1)).

It prints both tables (markdown), writes docs/figures/gr_study_surrogate.png,
docs/figures/gr_study_blackbox.png and docs/figures/gr_study_results.json
(or under --out-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxfd as fd

# ----------------------------------------------------------------------------------------------
# Part A: a neural surrogate of the Burgers flow map, trained with regularised gradients
# ----------------------------------------------------------------------------------------------

N_CELLS = 64
VISCOSITY = 0.05
T_FINAL = 0.5
DT = 0.01  # RK4; fd.max_stable_dt gives about 0.13 for the diffusion part at this viscosity

LR = 0.2
MOMENTUM = 0.9
# Strengths picked on a separate validation set (other data key, seed 0) from gamma in {0.01 ... 10},
# rho in {0.01 ... 0.2}, b in {3e-4, 6e-4, 1e-3}; the GR methods share gamma so they can be compared.
METHODS = {  # name -> keyword arguments of fd.gr.value_and_gradient (None: plain gradient)
    "SGD": None,
    "SAM (rho=0.02)": {"method": "sam", "eps": 0.02},
    "F-GR (gamma=3, eps=0.1)": {"method": "forward", "gamma": 3.0, "eps": 0.1},
    "B-GR (gamma=3, eps=0.1)": {"method": "backward", "gamma": 3.0, "eps": 0.1},
    "DB-GR (gamma=3)": {"method": "double_backprop", "gamma": 3.0},
    "flooding (b=6e-4)": {"method": "flooding", "flood_level": 6e-4},
}


def burgers_data(key, n_samples: int):
    """Random smooth periodic initial states and their Burgers states at T_FINAL (vmap over samples)."""
    grid = fd.Grid((N_CELLS,), ((0.0, 2 * np.pi),))
    (x,) = grid.coords
    rhs = fd.models.burgers(grid)
    args = {"viscosity": VISCOSITY, "bc": fd.Periodic()}
    modes = jnp.arange(1, 5, dtype=x.dtype)

    def initial(k):
        a = jax.random.normal(k, (2, 4), dtype=x.dtype)
        waves = a[0][:, None] * jnp.sin(modes[:, None] * x[None, :]) + a[1][:, None] * jnp.cos(modes[:, None] * x[None, :])
        return 0.5 * jnp.sum(waves / modes[:, None], axis=0)

    def flow(u0):
        sol = fd.simulate(rhs, u0, 0.0, T_FINAL, DT, stepper=fd.RK4(), args=args, stability="ignore")
        return sol.us[-1]

    u0 = jax.vmap(initial)(jax.random.split(key, n_samples))
    return u0, jax.jit(jax.vmap(flow))(u0)


class Surrogate(eqx.Module):
    """u(T) ~ u0 + MLP(u0)."""

    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(N_CELLS, N_CELLS, width_size=128, depth=2, activation=jax.nn.gelu, key=key)

    def __call__(self, u0):
        return u0 + self.mlp(u0)


def mse(model, u0, u1):
    return jnp.mean((jax.vmap(model)(u0) - u1) ** 2)


def relative_error(model, u0, u1):
    pred = jax.vmap(model)(u0)
    return jnp.linalg.norm(pred - u1) / jnp.linalg.norm(u1)


def train(method_kwargs, seed: int, data, steps: int, batch: int):
    """Train one surrogate; returns the model, its final training MSE and the seconds per step."""
    (u0_train, u1_train) = data
    model = Surrogate(jax.random.key(seed))
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.sgd(LR, momentum=MOMENTUM)

    def loss(a, u0, u1):
        return mse(eqx.combine(a, static), u0, u1)

    def step(carry, key):
        a, state = carry
        idx = jax.random.choice(key, u0_train.shape[0], (batch,), replace=False)
        u0, u1 = u0_train[idx], u1_train[idx]
        if method_kwargs is None:
            value, grad = jax.value_and_grad(loss)(a, u0, u1)
        else:
            value, grad = fd.gr.value_and_gradient(loss, a, u0, u1, **method_kwargs)
        updates, state = opt.update(grad, state, a)
        return (optax.apply_updates(a, updates), state), value

    @jax.jit
    def run(a, keys):
        (a, _), values = jax.lax.scan(step, (a, opt.init(a)), keys)
        return a, values

    keys = jax.random.split(jax.random.key(1000 + seed), steps)
    compiled = run.lower(arrays, keys).compile()
    times = []
    for _ in range(2):  # the second run repeats the first: the faster of two is the cost figure
        t0 = time.perf_counter()
        trained, values = compiled(arrays, keys)
        jax.block_until_ready(trained)
        times.append(time.perf_counter() - t0)
    arrays = trained
    per_step = min(times) / steps
    model = eqx.combine(arrays, static)
    return model, float(mse(model, u0_train, u1_train)), per_step, np.asarray(values)


def part_a(seeds, n_train: int, n_test: int, steps: int, batch: int):
    print(f"Part A: Burgers flow-map surrogate, {n_train} training / {n_test} test pairs, {steps} steps, "
          f"batch {batch}, seeds {list(seeds)}")
    t0 = time.perf_counter()
    u0, u1 = burgers_data(jax.random.key(2024), n_train + n_test)
    data_train = (u0[:n_train], u1[:n_train])
    data_test = (u0[n_train:], u1[n_train:])
    print(f"  data: {n_train + n_test} Burgers rollouts in {time.perf_counter() - t0:.1f} s "
          f"(relative change of the state over the window: "
          f"{float(jnp.linalg.norm(u1 - u0) / jnp.linalg.norm(u0)):.2f})")
    results = {}
    curves = {}
    for name, kwargs in METHODS.items():
        errs, train_losses, times = [], [], []
        for seed in seeds:
            model, train_loss, per_step, values = train(kwargs, seed, data_train, steps, batch)
            errs.append(float(relative_error(model, *data_test)))
            train_losses.append(train_loss)
            times.append(per_step)
            if seed == seeds[0]:
                curves[name] = values
        results[name] = {"test_rel_error": errs, "train_mse": train_losses, "seconds_per_step": times}
        print(f"  {name:30s} test rel. error {np.mean(errs):.4f} +- {np.std(errs):.4f}   "
              f"train MSE {np.mean(train_losses):.2e}   {1e3 * np.median(times):.2f} ms/step")
    base = np.median(results["SGD"]["seconds_per_step"])
    lines = ["| method | test relative L2 error (mean +- std) | train MSE | time / step | vs SGD |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        t = np.median(r["seconds_per_step"])
        r["time_ratio_to_sgd"] = float(t / base)
        lines.append(f"| {name} | {np.mean(r['test_rel_error']):.4f} +- {np.std(r['test_rel_error']):.4f} | "
                     f"{np.mean(r['train_mse']):.2e} | {1e3 * t:.2f} ms | {t / base:.2f}x |")
    return results, curves, "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Part B: fitting the parameters of a black-box simulation with zeroth-order estimators
# ----------------------------------------------------------------------------------------------

N_MODES = 6
THETA_TRUE = np.array([0.5, -0.4, 0.3, 0.2, -0.3, 0.15])
BOX = 0.6  # the Frank-Wolfe constraint set [-BOX, BOX]^6 (it contains THETA_TRUE)


class ExactGradient(fd.zo.AbstractEstimator):
    """Reverse mode through the simulation, as an estimator (so every method runs the same loop)."""

    def __call__(self, f, x, key):
        return jax.grad(f)(x)

    def evaluations(self, x) -> int:
        return 1  # one forward and one reverse pass; its cost is reported as time


def heat_problem(n_cells: int):
    grid = fd.Grid((n_cells,), ((0.0, 1.0),))
    (x,) = grid.coords
    rhs = fd.models.heat(grid)
    bc = fd.Dirichlet(0.0)
    u0 = jnp.sin(np.pi * x) + 0.5 * jnp.sin(3 * np.pi * x) + 0.25 * jnp.sin(6 * np.pi * x)
    modes = jnp.stack([jnp.cos(j * np.pi * x) for j in range(1, N_MODES + 1)])
    stepper = fd.RK4()
    # explicit RK4 must be stable for every theta the runs visit: inside the Frank-Wolfe box
    # |theta| <= BOX, so k <= 0.1 exp(0.5 * BOX * N_MODES); a dt that divides the save times
    dt_max = 0.9 * fd.max_stable_dt(stepper, grid, diffusivity=0.1 * np.exp(0.5 * BOX * N_MODES))
    t_save = 0.025
    dt = t_save / np.ceil(t_save / dt_max)
    t1 = 4 * t_save
    saveat = fd.SaveAt(ts=[t_save, 2 * t_save, t1])

    def snapshots(theta):
        k = 0.1 * jnp.exp(0.5 * (theta @ modes))
        sol = fd.simulate(rhs, u0, 0.0, t1, dt, stepper=stepper, args={"diffusivity": k, "bc": bc},
                          saveat=saveat, stability="ignore", checkpoint="none")
        return sol.us

    data = snapshots(jnp.asarray(THETA_TRUE))
    scale = jnp.mean(data**2)

    def misfit(theta):
        return jnp.mean((snapshots(theta) - data) ** 2) / scale

    return misfit, int(round(t1 / dt))


def largest_hessian_eigenvalue(f, x, iterations: int = 30):
    v = jnp.ones_like(x) / np.sqrt(x.size)
    hvp = jax.jit(lambda v: fd.zo.hvp(f, x, v))
    lam = 0.0
    for _ in range(iterations):
        w = hvp(v)
        lam = float(jnp.vdot(v, w))
        v = w / jnp.linalg.norm(w)
    return lam


def part_b(steps: int, n_cells: int):
    print(f"\nPart B: black-box fit of {N_MODES} diffusivity modes, 1-D heat equation, {n_cells} cells")
    with jax.enable_x64(True):  # finite differences of a misfit that falls by 1e6: float64
        misfit, n_steps = heat_problem(n_cells)
        theta0 = jnp.zeros(N_MODES)
        d = N_MODES
        L = largest_hessian_eigenvalue(misfit, theta0)
        lr = 1.0 / L
        print(f"  {n_steps} RK4 steps per simulation; largest Hessian eigenvalue at theta0 "
              f"(power iteration on fd.zo.hvp): {L:.3g}, gradient-descent step 1/L = {lr:.3g}")
        q, k_tangents = 2, 2
        runs = {
            "reverse mode (jax.grad)": fd.zo.ZOSGD(ExactGradient(), lr),
            "coordinate, forward (mu=1e-6)": fd.zo.ZOSGD(fd.zo.CoordinateEstimator(1e-6), lr),
            f"randomized sphere (q={q}, mu=1e-6)": fd.zo.ZOSGD(
                fd.zo.RandomizedEstimator(q, 1e-6), lr * q / (d + q - 1)),
            f"forward gradient (K={k_tangents})": fd.zo.ZOSGD(
                fd.zo.ForwardGradientEstimator(k_tangents), lr * k_tangents / (d + k_tangents + 1)),
            f"ZO Frank-Wolfe, coordinate, box [-{BOX}, {BOX}]": fd.zo.ZOFrankWolfe(
                fd.zo.CoordinateEstimator(1e-6), fd.zo.box_lmo(-BOX, BOX)),
        }
        results, curves = {}, {}
        f_time = jax.jit(misfit)
        f_time(theta0).block_until_ready()
        t0 = time.perf_counter()
        for _ in range(20):
            f_time(theta0).block_until_ready()
        eval_s = (time.perf_counter() - t0) / 20
        for name, opt in runs.items():
            jax.block_until_ready(fd.zo.minimize(misfit, theta0, opt, jax.random.key(0), steps))  # compiles
            t0 = time.perf_counter()
            theta, values = fd.zo.minimize(misfit, theta0, opt, jax.random.key(0), steps)
            jax.block_until_ready(values)
            wall = time.perf_counter() - t0
            per_step = opt.estimator.evaluations(theta0)
            results[name] = {
                "final_misfit": float(values[-1]),
                "parameter_error": float(jnp.linalg.norm(theta - THETA_TRUE) / np.linalg.norm(THETA_TRUE)),
                "evaluations_per_step": per_step, "wall_s": wall, "steps": steps,
            }
            curves[name] = np.asarray(values)
            print(f"  {name:42s} misfit {values[-1]:.2e}  parameter error "
                  f"{results[name]['parameter_error']:.1e}  {per_step} evals/step  {wall:.2f} s")
        lines = [f"| method | f-evaluations per step | misfit after {steps} steps | relative parameter error | wall time |",
                 "| --- | --- | --- | --- | --- |"]
        for name, r in results.items():
            evals = "1 gradient" if name.startswith("reverse") else (
                f"{r['evaluations_per_step']} jvps" if name.startswith("forward gradient") else str(r["evaluations_per_step"]))
            lines.append(f"| {name} | {evals} | {r['final_misfit']:.2e} | {r['parameter_error']:.1e} | "
                         f"{r['wall_s']:.2f} s |")
        info = {"simulation_steps": n_steps, "hessian_lambda_max": L, "learning_rate": lr,
                "seconds_per_evaluation": eval_s}
    return results, curves, "\n".join(lines), info


def plots(out_dir, curves_a, results_a, curves_b, results_b):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, values in curves_a.items():
        smooth = np.convolve(values, np.ones(50) / 50, mode="valid")
        axes[0].semilogy(smooth, label=name)
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("minibatch MSE (running mean of 50)")
    axes[0].set_title("Burgers surrogate: training loss (first seed)")
    axes[0].legend(fontsize=7)
    names = list(results_a)
    means = [np.mean(results_a[n]["test_rel_error"]) for n in names]
    stds = [np.std(results_a[n]["test_rel_error"]) for n in names]
    axes[1].bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue")
    axes[1].set_xticks(range(len(names)), [n.split(" (")[0] for n in names], rotation=30, fontsize=8)
    axes[1].set_ylabel("test relative L2 error")
    axes[1].set_title("held-out error (mean +- std over seeds)")
    lo = min(m - s for m, s in zip(means, stds))
    axes[1].set_ylim(max(0.0, 0.9 * lo), None)
    ratios = [results_a[n]["time_ratio_to_sgd"] for n in names]
    axes[2].bar(range(len(names)), ratios, color="tab:orange")
    axes[2].axhline(1.0, color="k", lw=0.8)
    axes[2].set_xticks(range(len(names)), [n.split(" (")[0] for n in names], rotation=30, fontsize=8)
    axes[2].set_ylabel("time per training step / SGD")
    axes[2].set_title("cost (median over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "gr_study_surrogate.png"), dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, values in curves_b.items():
        r = results_b[name]
        style = {"color": "k", "ls": "--", "lw": 2, "zorder": 3} if name.startswith("reverse") else {}
        axes[0].semilogy(values, label=name, **style)
        per_step = r["wall_s"] / r["steps"]
        axes[1].semilogy(per_step * np.arange(len(values)), values, label=name, **style)
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("wall time (s)")
    for ax in axes:
        ax.set_ylabel("normalised misfit")
        ax.legend(fontsize=7)
    axes[0].set_title("black-box heat-equation fit (coordinate = reverse mode per iteration)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "gr_study_blackbox.png"), dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a quick smoke test (fewer steps, seeds, samples)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="surrogate seeds (default 0 1 2 3 4)")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs",
                                                          "figures"))
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.small else [0, 1, 2, 3, 4])
    steps_a = 400 if args.small else 4000
    n_test = 256 if args.small else 1024
    steps_b = 60 if args.small else 300
    results_a, curves_a, table_a = part_a(seeds, n_train=128, n_test=n_test, steps=steps_a, batch=16)
    results_b, curves_b, table_b, info_b = part_b(steps_b, n_cells=64)
    print("\n" + table_a + "\n\n" + table_b)
    os.makedirs(args.out_dir, exist_ok=True)
    plots(args.out_dir, curves_a, results_a, curves_b, results_b)
    with open(os.path.join(args.out_dir, "gr_study_results.json"), "w") as f:
        json.dump({"command": "python examples/gradient_regularization_study.py" + (" --small" if args.small else ""),
                   "seeds": seeds, "surrogate": results_a, "blackbox": results_b, "blackbox_info": info_b,
                   "jax": jax.__version__, "devices": str(jax.devices())}, f, indent=1)
    print(f"\nwrote {os.path.normpath(args.out_dir)}/gr_study_surrogate.png, gr_study_blackbox.png, "
          "gr_study_results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
