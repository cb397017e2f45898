"""jaxsae: certified optimality for sparse dictionaries and sparse autoencoders.

The whole public API is listed here; the mathematics is in docs/theory.md.
"""

from .models._dictionary import Dictionary as Dictionary
from .models._objective import huber as huber, objective as objective, residuals as residuals
from .solvers._kkt import KKTResidual as KKTResidual, kkt_residual as kkt_residual
from .solvers._lasso import CodeSolution as CodeSolution, sparse_code as sparse_code
from .solvers._results import RESULTS as RESULTS
from .io._arrays import load_array as load_array
from .io._dictionary_file import (
    load_dictionary as load_dictionary,
    save_dictionary as save_dictionary,
)
from .certificates._wide import wide_bound as wide_bound

__version__ = "0.1.0"
