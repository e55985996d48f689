"""buffered() and the opt-in CPU runtime settings."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxfd as fd


def test_buffered_matches_jit_and_reuses_the_donated_buffer():
    grid = fd.Grid((64, 48), ((0.0, 1.0), (0.0, 2.0)))
    x, y = grid.mesh()
    u = jnp.sin(3 * x) * jnp.cos(y)

    def lap(v):
        return fd.laplacian(v, grid, bc=fd.Dirichlet(0.0))

    apply = fd.buffered(lap)
    fresh = apply(u)
    np.testing.assert_allclose(fresh, jax.jit(lap)(u), rtol=1e-14)
    out = jnp.empty_like(u)
    pointer = out.unsafe_buffer_pointer()
    out = apply(u, out=out)
    np.testing.assert_allclose(out, fresh, rtol=1e-14)
    # the result lives in the donated buffer's memory
    assert out.unsafe_buffer_pointer() == pointer


def _fresh_python(code, **env):
    """stdout of `code` run in a new interpreter (process-wide settings need one); fails on error."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_tune_cpu_runtime_in_a_fresh_process():
    code = (
        "import jaxfd as fd, jax, jax.numpy as jnp, numpy as np\n"
        "applied = fd.tune_cpu_runtime()\n"
        "g = fd.Grid((32, 32), ((0, 1), (0, 1)))\n"
        "u = jnp.ones(g.shape)\n"
        "r = fd.laplacian(u, g, bc=fd.Periodic())\n"
        "print(sorted(applied), float(jnp.abs(r).max()), jax.config.read(\"jax_cpu_enable_async_dispatch\"))\n"
    )
    stdout = _fresh_python(code)
    assert "sync_dispatch" in stdout and "False" in stdout.split()[-1]
    assert "fast_math" not in stdout  # opt-in on its own
    assert float(stdout.split()[-2]) == 0.0
    # and through the environment variable at import
    env_code = "import jaxfd, jax; print(jax.config.read(\"jax_cpu_enable_async_dispatch\"))"
    assert _fresh_python(env_code, JAXFD_TUNE_CPU="1").strip() == "False"


def test_tune_cpu_runtime_fast_math_keeps_nan_semantics_and_user_flags():
    # fast math reaches XLA through XLA_FLAGS (read when the backend starts); non-finite
    # checks must keep working, and a flag the user set is not overridden
    code = (
        "import os\n"
        "os.environ['XLA_FLAGS'] = '--xla_cpu_fast_math_honor_division=false'\n"
        "import jaxfd as fd, jax.numpy as jnp\n"
        "applied = fd.tune_cpu_runtime(fast_math=True)\n"
        "x = jnp.asarray([jnp.nan, jnp.inf, 1.0])\n"
        "print(applied['fast_math'], bool(jnp.isfinite(x).any() and not jnp.isfinite(x)[:2].any()))\n"
        "print(os.environ['XLA_FLAGS'])\n"
    )
    first, flags = _fresh_python(code).strip().splitlines()
    assert first == "True True"
    assert "--xla_cpu_enable_fast_math=true" in flags and "--xla_cpu_fast_math_honor_nans=true" in flags
    assert "--xla_cpu_fast_math_honor_division=false" in flags
    assert "--xla_cpu_fast_math_honor_division=true" not in flags
