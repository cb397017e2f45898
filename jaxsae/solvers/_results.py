"""Result codes shared by the iterative solvers (an Optimistix-style enumeration)."""

import equinox as eqx


class RESULTS(eqx.Enumeration):
    """Outcome of an iterative solve; ``throw=True`` turns failures into errors."""

    successful = ""
    max_steps_reached = (
        "The solver stopped at max_steps before every point met the tolerance. "
        "Raise max_steps, loosen tol, or inspect solution.gap to see which points lag."
    )
    nonfinite = (
        "A non-finite value (NaN/Inf) appeared. Check the data and dictionary for "
        "NaN/Inf and that λ is a finite positive number."
    )
