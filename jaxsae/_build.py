"""``python -m jaxsae._build``: compile the CPU sparse-coding kernel (``solvers/_lars.cc``).

Run by ``make`` after installing; ``--force`` rebuilds even when it is up to date.
"""

import sys

from .solvers._lars_ffi import build

if __name__ == "__main__":
    print(f"built {build(force='--force' in sys.argv)}")
