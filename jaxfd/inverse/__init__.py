"""PDE-constrained optimization: taylor_test, fit, regularizers."""
