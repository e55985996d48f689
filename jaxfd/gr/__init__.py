"""Gradient regularization (double-backprop and finite-difference GR, SAM, flooding) as functions and optax transformations.

All finite differences go through `jaxfd.directional_difference`. See the
"Gradient regularization" page of the docs for the formulas, identities and costs.
"""

from ._gradient import gradient as gradient, value_and_gradient as value_and_gradient
from ._transform import transform as transform
