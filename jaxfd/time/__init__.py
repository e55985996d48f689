"""Method-of-lines time integration."""

from ._adaptive import Adaptive as Adaptive
from ._simulate import SaveAt as SaveAt, Solution as Solution, simulate as simulate
from ._steppers import (
    AbstractEmbeddedRK as AbstractEmbeddedRK,
    AbstractExplicitRK as AbstractExplicitRK,
    BogackiShampine3 as BogackiShampine3,
    Dopri5 as Dopri5,
    AbstractStepper as AbstractStepper,
    Euler as Euler,
    Heun as Heun,
    RK4 as RK4,
    SSPRK3 as SSPRK3,
)
from ._stability import (
    cfl_number as cfl_number,
    diffusion_number as diffusion_number,
    estimate_spectral_radius as estimate_spectral_radius,
    max_stable_dt as max_stable_dt,
)
from ._implicit import (
    ETDRK4 as ETDRK4,
    IMEX222 as IMEX222,
    AbstractTheta as AbstractTheta,
    BackwardEuler as BackwardEuler,
    CrankNicolson as CrankNicolson,
    IMEXEuler as IMEXEuler,
    Split as Split,
    StormerVerlet as StormerVerlet,
)
