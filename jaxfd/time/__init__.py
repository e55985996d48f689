"""Method-of-lines time integration."""

from ._simulate import SaveAt as SaveAt, Solution as Solution, simulate as simulate
from ._steppers import (
    AbstractExplicitRK as AbstractExplicitRK,
    AbstractStepper as AbstractStepper,
    Euler as Euler,
    Heun as Heun,
    RK4 as RK4,
    SSPRK3 as SSPRK3,
)
