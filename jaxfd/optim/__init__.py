"""Second-order optimizers on pytrees: Hessian-free trust-region Newton-CG (Steihaug-Toint)."""
