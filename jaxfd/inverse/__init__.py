"""PDE-constrained optimization: taylor_test, fit, regularizers, worked inverse problems."""

from ._taylor import TaylorTestResult as TaylorTestResult, taylor_test as taylor_test
from ._constraints import AbstractConstraint as AbstractConstraint, Interval as Interval, Positive as Positive
from ._fit import FitDivergedError as FitDivergedError, FitHistory as FitHistory, FitResult as FitResult, fit as fit
from ._regularizers import h1_seminorm as h1_seminorm, tikhonov as tikhonov, total_variation as total_variation
