"""Zeroth-order and finite-difference gradient estimators, Hessian-vector products and zeroth-order optimizers.

Every difference goes through `jaxfd.directional_difference`. See the
"Gradient regularization" page of the docs for the estimators' laws and costs.
"""

from ._estimators import (
    coordinate as coordinate,
    directional as directional,
    forward_gradient as forward_gradient,
    hvp as hvp,
    randomized as randomized,
)
from ._optimizers import (
    AbstractEstimator as AbstractEstimator,
    AbstractZOOptimizer as AbstractZOOptimizer,
    CoordinateEstimator as CoordinateEstimator,
    ForwardGradientEstimator as ForwardGradientEstimator,
    RandomizedEstimator as RandomizedEstimator,
    ZOFrankWolfe as ZOFrankWolfe,
    ZOSGD as ZOSGD,
    box_lmo as box_lmo,
    l1_ball_lmo as l1_ball_lmo,
    minimize as minimize,
)
