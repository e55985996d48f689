"""Discover hidden PDEs from data with learnable, moment-constrained stencils (PDE-Net / FD-Net).

Run it from anywhere once jaxfd is installed:

    python examples/discover_pdes.py              # a few minutes on 2 CPU cores, mostly compiling
    python examples/discover_pdes.py --quick      # less data, the main rows only
    python examples/discover_pdes.py --json out.json

Each problem makes data with jaxfd itself: the true PDE solved by
`fd.simulate` (RK4) on a grid three times finer than the model's, sampled
on the model's cells (every third fine cell centre) every `DT`. The model
(`fd.learn.PDEModel`) is forward Euler over one data interval,

    u_{n+1} = u_n + DT * sum_k c_k(x) phi_k(u, u_x, u_xx),

with learnable 5-point stencils for u_x and u_xx (moments of order up to
|alpha| + 1 fixed: guaranteed order 2, the higher moments learned) and a
library phi_k of monomials (`fd.learn.LinearCombination`); variable
coefficients and forcing terms expand c_k(x) in a few basis functions. The
fit is sequential thresholding: train everything with the trust-region
Newton-CG method (`fd.optim.trust_region_minimize`, exact Hessian-vector
products), switch off terms that contribute less than 1% of du/dt
(`PDEModel.prune`), train again.

Problems:
  (a) heat u_t = K u_xx (periodic): noise-free (5- and 7-point stencils), and
      with 1% noise (one-step and 10-step loss); heat with a forcing term
      u_t = K u_xx + s(x) between walls (Dirichlet u = 0), s(x) learned in a
      basis {1, sin(pi x), sin(2 pi x)};
  (b) linear convection-diffusion u_t + v(x) u_x = D u_xx with a variable
      velocity v(x) = 0.5 + 0.3 sin(2 pi x), learned in {1, sin, cos};
  (c) viscous Burgers u_t + u u_x = nu u_xx, library of degree 2.
(b) and (c) are also fitted with an RK4 model (`stepper=fd.RK4()`), and (c)
with 7-point stencils.

For each: the recovered coefficients, and the root-mean-square error of a
100-step prediction from an unseen initial state against the truth, next to
the same error of the true PDE discretised on the model's grid (forward
Euler at DT with the standard second-order central stencils: the model's
own structure with the true coefficients; and `fd.models` with RK4 at DT).
Finally the optimizer comparison on (c): trust-region Newton-CG (plain,
Jacobi-scaled, Jacobi-scaled with finite-difference Hessian-vector
products) against L-BFGS and Adam (optax), all from the same start on the
full library: iterations and wall time (best of three compiled runs) to
reach twice the best loss any of them found. Everything is float64.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax

jax.config.update("jax_enable_x64", True)  # the 1e-3 claims on coefficients need float64

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxfd as fd  # noqa: E402

DT = 1e-3
REFINE = 3  # data grid = REFINE x model grid; model cell centres are every third fine centre
SUBSTEPS_DATA = 4  # RK4 steps per data interval on the fine grid
HORIZON = 100  # prediction steps
PRUNE = 1e-2  # prune terms below 1% of du/dt
SIZE = 5  # stencil size (guaranteed order 2: u_x learns moments 3, 4; u_xx learns moment 4)

_LOSSES = {}


def loss_fn(n_ahead):
    """One function object per horizon, so the compiled optimizer loop is reused."""
    if n_ahead not in _LOSSES:
        _LOSSES[n_ahead] = lambda model, data: fd.learn.rollout_loss(model, data, n_ahead)
    return _LOSSES[n_ahead]


def fourier_states(grid, rng, count, modes, *, walls=False, amplitude=1.0):
    """Random smooth initial states: Fourier modes 1..modes with amplitudes ~ 1/m."""
    x = grid.coords_numpy[0]
    lo, hi = grid.extent[0]
    length = hi - lo
    states = []
    for _ in range(count):
        u = np.zeros_like(x)
        for m in range(1, modes + 1):
            a, b = rng.normal(size=2) / m
            if walls:  # sine modes vanish on both walls
                u += a * np.sin(np.pi * m * (x - lo) / length)
            else:
                u += a * np.sin(2 * np.pi * m * (x - lo) / length) + b * np.cos(2 * np.pi * m * (x - lo) / length)
        states.append(amplitude * u / max(np.max(np.abs(u)), 1e-12))
    return jnp.asarray(np.stack(states))


def make_data(rhs, args, u0_fine, n_times):
    """Trajectories of the true PDE on the fine grid, sampled on the model's cells every DT."""

    def one(u0):
        sol = fd.simulate(rhs, u0, 0.0, n_times * DT, DT / SUBSTEPS_DATA, stepper=fd.RK4(), args=args,
                          saveat=fd.SaveAt(t0=True, every=SUBSTEPS_DATA), stability="ignore")
        return sol.us[:, REFINE // 2::REFINE]

    return jax.jit(jax.vmap(one))(u0_fine)


def fit(model, train, n_ahead=1, max_steps=150):
    solver = fd.optim.TrustRegionNewtonCG(max_steps=max_steps, gtol=1e-16, rtol=1e-10, ftol=1e-12,
                                          preconditioner="jacobi")
    start = time.perf_counter()
    model, info = fd.optim.trust_region_minimize(loss_fn(n_ahead), model, solver, args=(train,))
    jax.block_until_ready(model)
    return model, info, time.perf_counter() - start


def discover(model, train, n_ahead=1):
    """Fit, prune the terms that contribute < PRUNE of du/dt, fit again."""
    model, info1, t1 = fit(model, train, n_ahead)
    pruned = model.prune(train, PRUNE)
    model, info2, t2 = fit(pruned, train, n_ahead)
    return model, {"iterations": [int(info1.steps), int(info2.steps)], "loss": float(info2.value),
                   "result": info2.message, "seconds": t1 + t2}


def rms(a):
    return float(jnp.sqrt(jnp.mean(a**2)))


def prediction_errors(model, test, references):
    """rms error of HORIZON-step predictions from test[0] against test[1:], for the model and
    for each reference rhs (name -> (rhs, stepper, substeps))."""
    out = {"learned": rms(model.rollout(test[0], HORIZON) - test[1:HORIZON + 1])}
    for name, (rhs, stepper, sub) in references.items():
        sol = fd.simulate(rhs, test[0], 0.0, HORIZON * DT, DT / sub, stepper=stepper,
                          saveat=fd.SaveAt(every=sub), stability="ignore")
        out[name] = rms(sol.us - test[1:HORIZON + 1])
    return out


def coefficient_table(model):
    return {name: [float(v) for v in c] for name, c in model.coefficients().items()}


# ----------------------------------------------------------------------------- problems


def heat(n, n_traj, n_times, rng, *, noise=0.0, n_ahead=1, size=SIZE):
    K = 0.1
    fine, grid = fd.Grid(REFINE * n, (0.0, 1.0)), fd.Grid(n, (0.0, 1.0))
    bc = fd.Periodic()
    u0 = fourier_states(fine, rng, n_traj + 1, 4)
    data = make_data(fd.models.heat(fine), {"diffusivity": jnp.asarray(K), "bc": bc}, u0, max(n_times, HORIZON))
    train, test = data[:n_traj, :n_times + 1], data[n_traj]
    if noise:
        train = train + noise * rms(train) * jnp.asarray(rng.normal(size=train.shape))
    model = fd.learn.PDEModel(grid, fd.learn.LinearCombination(3, 1), dt=DT, derivatives=[1, 2], bc=bc,
                              size=size, accuracy=2)
    model, stats = discover(model, train, n_ahead)

    def euler_rhs(t, u, a):
        return K * fd.laplacian(u, grid, bc=bc)

    refs = {"true, Euler + central": (euler_rhs, fd.Euler(), 1),
            "true, fd.models + RK4": (lambda t, u, a: fd.models.heat(grid)(t, u, {"diffusivity": K, "bc": bc}),
                                      fd.RK4(), 1)}
    k = model.coefficients().get("u_xx", [np.nan])[0]
    return {"truth": {"u_xx": K}, "learned": coefficient_table(model), "equation": model.equation(5, 0.0),
            "K_rel_error": abs(k - K) / K, "prediction_rms": prediction_errors(model, test, refs), **stats}


def heat_forced(n, n_traj, n_times, rng):
    K = 0.1
    fine, grid = fd.Grid(REFINE * n, (0.0, 1.0)), fd.Grid(n, (0.0, 1.0))
    bc = fd.Dirichlet(0.0)
    xf = fine.mesh()[0]
    # s(x), unknown to the model; it vanishes on the walls, as u_t = 0 = K u_xx + s does there for
    # the sine initial states (incompatible data would start with a boundary layer)
    source = 2.0 * jnp.sin(np.pi * xf) - 1.0 * jnp.sin(2 * np.pi * xf)
    u0 = fourier_states(fine, rng, n_traj + 1, 4, walls=True)
    args = {"diffusivity": jnp.asarray(K), "bc": bc, "source": source}
    data = make_data(fd.models.heat(fine), args, u0, max(n_times, HORIZON))
    train, test = data[:n_traj, :n_times + 1], data[n_traj]
    basis = (lambda x: 1.0, lambda x: jnp.sin(np.pi * x), lambda x: jnp.sin(2 * np.pi * x))
    model = fd.learn.PDEModel(grid, fd.learn.LinearCombination(3, 1, basis=basis), dt=DT, derivatives=[1, 2],
                              bc=bc, size=SIZE, accuracy=2)
    model, stats = discover(model, train)
    xc = grid.mesh()[0]
    s_coarse = 2.0 * jnp.sin(np.pi * xc) - 1.0 * jnp.sin(2 * np.pi * xc)

    def euler_rhs(t, u, a):
        return K * fd.laplacian(u, grid, bc=bc) + s_coarse

    refs = {"true, Euler + central": (euler_rhs, fd.Euler(), 1),
            "true, fd.models + RK4": (lambda t, u, a: fd.models.heat(grid)(t, u, {"diffusivity": K, "bc": bc,
                                                                                  "source": s_coarse}),
                                      fd.RK4(), 1)}
    coefs = model.coefficients()
    k = coefs.get("u_xx", [np.nan])[0]
    return {"truth": {"u_xx": [K, 0, 0], "1": [0.0, 2.0, -1.0]}, "learned": coefficient_table(model),
            "equation": model.equation(4, 0.0), "K_rel_error": abs(k - K) / K,
            "source_max_error": float(np.max(np.abs(np.asarray(coefs.get("1", np.zeros(3))) - [0.0, 2.0, -1.0]))),
            "prediction_rms": prediction_errors(model, test, refs), **stats}


def convection_diffusion(n, n_traj, n_times, rng, stepper=None):
    D, V0, V1 = 0.02, 0.5, 0.3
    fine, grid = fd.Grid(REFINE * n, (0.0, 1.0)), fd.Grid(n, (0.0, 1.0))
    bc = fd.Periodic()

    def velocity(g):
        return V0 + V1 * jnp.sin(2 * np.pi * g.mesh()[0])

    rhs = fd.models.advection_diffusion_reaction(fine, scheme="weno5", accuracy=4)
    args = {"velocity": (velocity(fine),), "diffusivity": jnp.asarray(D), "bc": bc}
    u0 = fourier_states(fine, rng, n_traj + 1, 4)
    data = make_data(rhs, args, u0, max(n_times, HORIZON))
    train, test = data[:n_traj, :n_times + 1], data[n_traj]
    basis = (lambda x: 1.0, lambda x: jnp.sin(2 * np.pi * x), lambda x: jnp.cos(2 * np.pi * x))
    model = fd.learn.PDEModel(grid, fd.learn.LinearCombination(3, 1, basis=basis), dt=DT, derivatives=[1, 2],
                              bc=bc, size=SIZE, accuracy=2, stepper=stepper)
    model, stats = discover(model, train)
    vc = velocity(grid)

    def euler_rhs(t, u, a):
        return D * fd.laplacian(u, grid, bc=bc) - vc * fd.diff(u, grid, 0, bc=bc)

    coarse_rhs = fd.models.advection_diffusion_reaction(grid, scheme="weno5")
    coarse_args = {"velocity": (vc,), "diffusivity": D, "bc": bc}
    refs = {"true, Euler + central": (euler_rhs, fd.Euler(), 1),
            "true, fd.models + RK4": (lambda t, u, a: coarse_rhs(t, u, coarse_args), fd.RK4(), 1)}
    coefs = model.coefficients()
    truth = {"u_x": [-V0, -V1, 0.0], "u_xx": [D, 0.0, 0.0]}
    errs = {name: float(np.max(np.abs(np.asarray(coefs.get(name, np.zeros(3))) - np.asarray(v))) / np.max(np.abs(v)))
            for name, v in truth.items()}
    return {"truth": truth, "learned": coefficient_table(model), "equation": model.equation(4, 0.0),
            "coefficient_rel_error": errs, "prediction_rms": prediction_errors(model, test, refs), **stats}


def burgers_problem(n, n_traj, n_times, rng, size=SIZE, stepper=None):
    NU = 0.05
    fine, grid = fd.Grid(REFINE * n, (0.0, 1.0)), fd.Grid(n, (0.0, 1.0))
    bc = fd.Periodic()
    u0 = fourier_states(fine, rng, n_traj + 1, 3, amplitude=1.0)
    data = make_data(fd.models.burgers(fine, scheme="weno5", accuracy=4), {"viscosity": jnp.asarray(NU), "bc": bc},
                     u0, max(n_times, HORIZON))
    train, test = data[:n_traj, :n_times + 1], data[n_traj]
    model = fd.learn.PDEModel(grid, fd.learn.LinearCombination(3, 2), dt=DT, derivatives=[1, 2], bc=bc,
                              size=size, accuracy=2, stepper=stepper)
    model0 = model
    model, stats = discover(model, train)

    def euler_rhs(t, u, a):
        return NU * fd.laplacian(u, grid, bc=bc) - u * fd.diff(u, grid, 0, bc=bc)

    coarse_rhs = fd.models.burgers(grid, scheme="weno5")
    refs = {"true, Euler + central": (euler_rhs, fd.Euler(), 1),
            "true, fd.models + RK4": (lambda t, u, a: coarse_rhs(t, u, {"viscosity": NU, "bc": bc}), fd.RK4(), 1)}
    coefs = model.coefficients()
    nu = coefs.get("u_xx", [np.nan])[0]
    adv = coefs.get("u*u_x", [np.nan])[0]
    result = {"truth": {"u*u_x": -1.0, "u_xx": NU}, "learned": coefficient_table(model),
              "equation": model.equation(4, 0.0), "nu_rel_error": abs(nu - NU) / NU,
              "advection_rel_error": abs(adv + 1.0), "prediction_rms": prediction_errors(model, test, refs), **stats}
    return result, model0, train


# ----------------------------------------------------------------------------- optimizers


def compare_optimizers(model, train, *, adam_steps, lbfgs_steps, tr_steps):
    """Iterations and wall time of trust-region Newton-CG, L-BFGS and Adam on the same loss,
    from the same start (the full library, nothing pruned). Times exclude compilation (each
    loop is compiled and run once first)."""
    loss = loss_fn(1)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def f(p):
        return loss(eqx.combine(p, static), train)

    def timed(run, repeats=3):
        out = run()  # compile
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            out = jax.block_until_ready(run())
            best = min(best, time.perf_counter() - start)
        return out, best

    # trust region: plain, Jacobi-scaled, and Jacobi-scaled with finite-difference HVPs
    variants = {
        "tr": fd.optim.TrustRegionNewtonCG(max_steps=tr_steps, gtol=1e-16, rtol=1e-10),
        "trj": fd.optim.TrustRegionNewtonCG(max_steps=tr_steps, gtol=1e-16, rtol=1e-10, preconditioner="jacobi"),
        "trf": fd.optim.TrustRegionNewtonCG(max_steps=tr_steps, gtol=1e-16, rtol=1e-10, preconditioner="jacobi",
                                            hvp="finite_difference"),
    }
    tr_runs = {}
    for key, solver in variants.items():
        (tr_model, info), seconds = timed(lambda s=solver: fd.optim.trust_region_minimize(loss, model, s, args=(train,)))
        tr_runs[key] = (tr_model, info, seconds, np.asarray(info.history["value"])[: int(info.steps) + 1])

    # L-BFGS (optax, zoom line search), one compiled while loop recording the loss
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def run_lbfgs(p):
        return run_lbfgs_capped(p, lbfgs_steps)

    @eqx.filter_jit
    def run_lbfgs_capped(p, cap):
        def body(carry):
            p, state, k, hist = carry
            value, grad = value_and_grad(p, state=state)
            updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=f)
            p = optax.apply_updates(p, updates)
            return p, state, k + 1, hist.at[k].set(value)

        def cond(carry):
            _, state, k, _ = carry
            grad = optax.tree_utils.tree_get(state, "grad")
            gnorm = jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(grad)))
            return (k < cap) & ((k == 0) | (gnorm > 1e-14))

        hist = jnp.full((lbfgs_steps + 1,), jnp.nan)
        p, state, k, hist = jax.lax.while_loop(cond, body, (p, opt.init(p), 0, hist))
        return p, k, hist.at[k].set(f(p))

    (lb_params, lb_k, lb_hist), lb_time = timed(lambda: run_lbfgs(params))
    lb_hist = np.asarray(lb_hist)[: int(lb_k) + 1]

    # Adam, one compiled scan
    adam = optax.adam(1e-3)

    def run_adam(p):
        return run_adam_capped(p, adam_steps)

    @eqx.filter_jit
    def run_adam_capped(p, cap):
        def step(carry, _):
            p, state = carry
            value, grad = jax.value_and_grad(f)(p)
            updates, state = adam.update(grad, state, p)
            return (optax.apply_updates(p, updates), state), value

        (p, _), hist = jax.lax.scan(step, (p, adam.init(p)), None, length=cap)
        return p, jnp.append(hist, f(p))

    (ad_params, ad_hist), ad_time = timed(lambda: run_adam(params))
    ad_hist = np.asarray(ad_hist)

    # The target: twice the best loss any of them reached (all three reach it, or the
    # table says so). Time to target: the same deterministic run, stopped there.
    hists = {key: run[3] for key, run in tr_runs.items()}
    hists.update(lb=lb_hist, ad=ad_hist)
    target = 2.0 * min(np.nanmin(h) for h in hists.values())

    def first_below(hist):
        idx = np.nonzero(hist <= target)[0]
        return int(idx[0]) if idx.size else None

    def nu_of(p):
        return float(eqx.combine(p, static).coefficients()["u_xx"][0])

    hits = {key: first_below(h) for key, h in hists.items()}
    time_to = {}
    for key, solver in variants.items():
        if hits[key]:
            capped = dataclasses.replace(solver, max_steps=hits[key])
            _, time_to[key] = timed(lambda c=capped: fd.optim.trust_region_minimize(loss, model, c, args=(train,)))
    if hits["lb"]:
        _, time_to["lb"] = timed(lambda: run_lbfgs_capped(params, hits["lb"]))
    if hits["ad"]:
        _, time_to["ad"] = timed(lambda: run_adam_capped(params, hits["ad"]))

    def tr_row(key):
        tr_model, info, seconds, hist = tr_runs[key]
        return key, hist, seconds, nu_of(eqx.filter(tr_model, eqx.is_inexact_array)), int(info.num_hvp)

    rows = {
        "trust-region Newton-CG (exact HVP)": tr_row("tr"),
        "trust-region Newton-CG, Jacobi (exact HVP)": tr_row("trj"),
        "trust-region Newton-CG, Jacobi (finite-difference HVP)": tr_row("trf"),
        "L-BFGS (optax.lbfgs, zoom line search)": ("lb", lb_hist, lb_time, nu_of(lb_params), None),
        "Adam (lr 1e-3)": ("ad", ad_hist, ad_time, nu_of(ad_params), None),
    }
    out = {"target_loss": float(target), "start_loss": float(hists["tr"][0])}
    for name, (key, hist, seconds, nu, n_hvp) in rows.items():
        iters = len(hist) - 1
        out[name] = {"iterations_run": iters, "iterations_to_target": hits[key],
                     "seconds_to_target": time_to.get(key), "final_loss": float(np.nanmin(hist)),
                     "seconds": seconds, "nu": nu, "num_hvp": n_hvp}
    return out


# ----------------------------------------------------------------------------- report


def print_report(results):
    print("\n## Recovered equations\n")
    print("| problem | learned equation | iterations (fit, refit) | fit time |")
    print("| --- | --- | --- | --- |")
    for name, r in results["problems"].items():
        print(f"| {name} | `{r['equation']}` | {r['iterations'][0]}, {r['iterations'][1]} | {r['seconds']:.1f} s |")
    print("\n## Coefficient errors and 100-step prediction errors (rms, against the truth)\n")
    print("| problem | coefficient error | learned model | true PDE, Euler + central | true PDE, fd.models + RK4 |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results["problems"].items():
        if "K_rel_error" in r:
            ce = f"K: {r['K_rel_error']:.1e} rel."
            if "source_max_error" in r:
                ce += f"; s(x): {r['source_max_error']:.1e} abs."
        elif "coefficient_rel_error" in r:
            ce = "; ".join(f"{k}: {v:.1e} rel." for k, v in r["coefficient_rel_error"].items())
        else:
            ce = f"nu: {r['nu_rel_error']:.1e} rel.; u*u_x: {r['advection_rel_error']:.1e} rel."
        p = r["prediction_rms"]
        print(f"| {name} | {ce} | {p['learned']:.2e} | {p['true, Euler + central']:.2e} | "
              f"{p['true, fd.models + RK4']:.2e} |")
    c = results["optimizers"]
    print(f"\n## Optimizers on (c) Burgers, full library (start loss {c['start_loss']:.2e}, "
          f"target loss {c['target_loss']:.2e})\n")
    print("| optimizer | iterations to target | time to target | iterations run | best loss | learned nu | run time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in c.items():
        if not isinstance(r, dict):
            continue
        hit = r["iterations_to_target"]
        hit = "not reached" if hit is None else str(hit)
        tt = "-" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.2f} s"
        extra = f" ({r['num_hvp']} HVPs)" if r["num_hvp"] else ""
        print(f"| {name} | {hit} | {tt} | {r['iterations_run']}{extra} | {r['final_loss']:.2e} | {r['nu']:.5f} | "
              f"{r['seconds']:.2f} s |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="less data, smaller optimizer budgets, and only the main rows (no 7-point, "
                             "10-step or RK4 variants)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    n, n_traj, n_times = (32, 2, 12) if args.quick else (32, 4, 30)
    start = time.perf_counter()
    problems = {}
    quick = args.quick
    steps = [
        ("(a) heat", lambda: heat(n, n_traj, n_times, rng)),
        ("(a) heat, 7-point stencils", lambda: heat(n, n_traj, n_times, rng, size=7)),
        ("(a) heat, 1% noise", lambda: heat(n, n_traj, n_times, rng, noise=0.01)),
        ("(a) heat, 1% noise, 10-step loss", lambda: heat(n, n_traj, n_times, rng, noise=0.01, n_ahead=10)),
        ("(a) heat + forcing, walls", lambda: heat_forced(n, n_traj, n_times, rng)),
        ("(b) convection-diffusion, v(x)", lambda: convection_diffusion(n, n_traj, n_times, rng)),
        ("(b) convection-diffusion, v(x), RK4 model", lambda: convection_diffusion(n, n_traj, n_times, rng,
                                                                                    stepper=fd.RK4())),
    ]
    skipped_when_quick = ("7-point", "10-step", "RK4")
    for name, run in steps:
        if quick and any(word in name for word in skipped_when_quick):
            continue
        t = time.perf_counter()
        problems[name] = run()
        print(f"{name}: {problems[name]['equation']}  ({time.perf_counter() - t:.1f} s)", flush=True)
    for name, size, stepper in (("(c) Burgers", SIZE, None), ("(c) Burgers, RK4 model", SIZE, fd.RK4()),
                                ("(c) Burgers, 7-point stencils", 7, None)):
        if quick and any(word in name for word in skipped_when_quick):
            continue
        t = time.perf_counter()
        problems[name], model, train = burgers_problem(2 * n, n_traj, n_times, np.random.default_rng(args.seed + 1),
                                                       size=size, stepper=stepper)
        print(f"{name}: {problems[name]['equation']}  ({time.perf_counter() - t:.1f} s)", flush=True)
        if name == "(c) Burgers":
            burgers_model, burgers_train = model, train
    t = time.perf_counter()
    budgets = dict(adam_steps=2000, lbfgs_steps=200, tr_steps=100) if args.quick else \
        dict(adam_steps=20000, lbfgs_steps=1000, tr_steps=150)
    optimizers = compare_optimizers(burgers_model, burgers_train, **budgets)
    print(f"optimizer comparison: {time.perf_counter() - t:.1f} s", flush=True)
    results = {"problems": problems, "optimizers": optimizers,
               "settings": {"cells": n, "burgers_cells": 2 * n, "trajectories": n_traj, "snapshots": n_times + 1,
                            "dt": DT, "stencil_size": SIZE, "prune": PRUNE, "seed": args.seed},
               "total_seconds": time.perf_counter() - start}
    print_report(results)
    print(f"\ntotal {results['total_seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
