"""Gradient regularization (double-backprop and finite-difference GR, SAM, flooding) as functions and optax transformations."""
