"""jaxfd: differentiable finite-difference simulation in JAX."""

from ._runtime import tune_cpu_runtime as tune_cpu_runtime  # first: JAXFD_TUNE_CPU acts at import

from ._boundary import (
    AbstractBoundaryCondition as AbstractBoundaryCondition,
    Dirichlet as Dirichlet,
    Extrapolate as Extrapolate,
    Neumann as Neumann,
    Periodic as Periodic,
    Robin as Robin,
    pad as pad,
)
from ._buffered import buffered as buffered
from ._directional import directional_difference as directional_difference
from ._grid import Grid as Grid
from ._linear import LinearOperator as LinearOperator
from ._operators import (
    FaceCoefficients as FaceCoefficients,
    advection as advection,
    curl as curl,
    diff as diff,
    diffusion as diffusion,
    divergence as divergence,
    face_coefficients as face_coefficients,
    flux_divergence as flux_divergence,
    gradient as gradient,
    laplacian as laplacian,
    mixed_diff as mixed_diff,
)
from ._stencil import (
    backward_weights as backward_weights,
    central_weights as central_weights,
    closure_weights as closure_weights,
    fornberg_weights as fornberg_weights,
    forward_weights as forward_weights,
)

from .solve import (
    CG as CG,
    GMRES as GMRES,
    AbstractLinearSolver as AbstractLinearSolver,
    BiCGStab as BiCGStab,
    SolveInfo as SolveInfo,
    poisson as poisson,
    Multigrid as Multigrid,
    MultigridSolver as MultigridSolver,
    NewtonKrylov as NewtonKrylov,
    RootInfo as RootInfo,
    root as root,
    solve as solve,
)
from .time import (
    Adaptive as Adaptive,
    BogackiShampine3 as BogackiShampine3,
    Dopri5 as Dopri5,
    ETDRK4 as ETDRK4,
    IMEX222 as IMEX222,
    BackwardEuler as BackwardEuler,
    CrankNicolson as CrankNicolson,
    IMEXEuler as IMEXEuler,
    Split as Split,
    StormerVerlet as StormerVerlet,
    RK4 as RK4,
    SSPRK3 as SSPRK3,
    AbstractStepper as AbstractStepper,
    Euler as Euler,
    Heun as Heun,
    SaveAt as SaveAt,
    cfl_number as cfl_number,
    diffusion_number as diffusion_number,
    max_stable_dt as max_stable_dt,
    Solution as Solution,
    simulate as simulate,
)

from . import models as models
from . import gr as gr
from . import zo as zo
from . import learn as learn
from . import optim as optim
from . import inverse as inverse
from .inverse import fit as fit, taylor_test as taylor_test

__version__ = "0.1.0"
