"""Figures (matplotlib is imported only inside this package)."""

from ._figures import (
    atoms_figure as atoms_figure,
    firing_figure as firing_figure,
    paired_bars_figure as paired_bars_figure,
    per_atom_figure as per_atom_figure,
    spectrum_figure as spectrum_figure,
    width_figure as width_figure,
)
from ._phenomena import (  # what the notebooks draw with
    bars as bars,
    figure_dir as figure_dir,
    prediction_vs_measurement as prediction_vs_measurement,
    save_figure as save_figure,
)
from ._sweep import sweep_figure as sweep_figure
from ._tree import family_tree_figure as family_tree_figure
