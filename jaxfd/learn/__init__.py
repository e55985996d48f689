"""Learnable, moment-constrained stencils and learnable PDE models (PDE-Net / FD-Net).

* `moment_matrix`, `filter_from_moments`, `moment_transform`, `stencil_order`:
  the linear map between a filter and its moments, in 1-D, 2-D (any size);
* `MomentStencil`: a learnable filter whose low-order moments are fixed so
  that it approximates a chosen derivative to a guaranteed order;
  `apply_filter` applies any centred filter with jaxfd boundary conditions;
* `PDEModel` with a `LinearCombination` or `NetworkTerm` right-hand side,
  and `rollout_loss`, the multi-step training loss.
"""

from ._layer import MomentStencil as MomentStencil, apply_filter as apply_filter
from ._model import (
    AbstractTerm as AbstractTerm,
    LinearCombination as LinearCombination,
    NetworkTerm as NetworkTerm,
    PDEModel as PDEModel,
    moment_penalty as moment_penalty,
    rollout_loss as rollout_loss,
)
from ._moments import (
    filter_from_moments as filter_from_moments,
    filter_offsets as filter_offsets,
    moment_matrix as moment_matrix,
    moment_transform as moment_transform,
    stencil_order as stencil_order,
)
