"""Linear (and later nonlinear) solves with implicit differentiation."""

from ._krylov import (
    CG as CG,
    GMRES as GMRES,
    AbstractLinearSolver as AbstractLinearSolver,
    BiCGStab as BiCGStab,
)
from ._solve import SolveInfo as SolveInfo, solve as solve
from ._fast import poisson as poisson
from ._root import NewtonKrylov as NewtonKrylov, RootInfo as RootInfo, root as root
from ._multigrid import Multigrid as Multigrid, MultigridSolver as MultigridSolver
