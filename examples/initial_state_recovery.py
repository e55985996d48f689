"""Recover the initial temperature of 2-D advection-diffusion from sparse sensors.

    python examples/initial_state_recovery.py [--size 48] [--noise 0.0] [--iterations 200]

The forward model is one fd.simulate rollout (SSP-RK3, upwind advection);
its gradient with respect to the whole initial field flows back through the
rollout with O(sqrt(steps)) stored states (checkpoint="nested").
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jaxfd as fd
from jaxfd.inverse.problems import initial_state

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--size", type=int, default=initial_state.DEFAULTS["size"])
parser.add_argument("--noise", type=float, default=initial_state.DEFAULTS["noise"])
parser.add_argument("--iterations", type=int, default=initial_state.DEFAULTS["iterations"])
parser.add_argument("--out", default="initial_state_recovery.png")
options = parser.parse_args()

with jax.enable_x64(True):
    small = initial_state.make(size=16, noise=options.noise, dtype=jnp.float64)
    u0 = small.truth["u0"]
    du = jnp.asarray(np.random.default_rng(0).standard_normal(u0.shape))
    print(fd.taylor_test(small.objective, {"u0": u0}, {"u0": du}))

problem = initial_state.make(size=options.size, noise=options.noise, dtype=jnp.float32)
print(f"{int(problem.data['sensors'].sum())} sensors, {len(problem.data['sample_times'])} sample times, "
      f"{problem.data['steps']} time steps")
result = fd.fit(problem.objective, problem.initial_params, max_steps=options.iterations, progress=True,
                **problem.fit_options)
print(f"{result.steps} L-BFGS steps ({result.reason}), loss {result.history.loss[0]:.3e} -> {result.loss:.3e}, "
      f"{result.wall_time_s:.1f} s of which compile {result.compile_time_s:.1f} s")
for name, value in problem.errors(result.params).items():
    print(f"  {name}: {value:.4f}")
problem.plot(result.params, result.history, options.out)
print(f"wrote {options.out}")
