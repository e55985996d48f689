"""Zeroth-order and finite-difference gradient estimators and Hessian-vector products."""
