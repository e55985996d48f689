"""Second-order optimizers on pytrees: Hessian-free trust-region Newton-CG (Steihaug-Toint).

* `TrustRegionNewtonCG`: the settings (radius rule, tolerances, exact or
  finite-difference Hessian-vector products);
* `trust_region_minimize(f, x0, solver)`: the compiled loop, returning the
  solution and a `TrustRegionInfo`.
"""

from ._trust_region import (
    TrustRegionInfo as TrustRegionInfo,
    TrustRegionNewtonCG as TrustRegionNewtonCG,
    trust_region_minimize as trust_region_minimize,
)
