"""Learnable, moment-constrained stencils and learnable PDE models (PDE-Net / FD-Net)."""
