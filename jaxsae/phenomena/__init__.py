"""Phenomena of THEORY §7: predictions made before learning, measurements after.

Predictions: absorption (its exact saving, the λ where it vanishes, absorbed directions), antipodal
pairs for dense signed directions (firing rates and codes), the shrinkage
component of residuals (R). Measurements: MMCS, MCC, absorption rates and
fractions, dense latents, antipodal pairs, dark-matter R², split family trees.
"""

from ..models._metrics import dense_latents as dense_latents, firing_rate as firing_rate
from ._family_tree import FamilyTree as FamilyTree, family_tree as family_tree
from ._matching import hungarian as hungarian
from ._measurements import (
    Absorption as Absorption,
    AntipodalPairs as AntipodalPairs,
    Matching as Matching,
    absorption as absorption,
    antipodal_pairs as antipodal_pairs,
    best_atoms as best_atoms,
    cosines as cosines,
    dark_matter_r2 as dark_matter_r2,
    mcc as mcc,
    mmcs as mmcs,
    split_parents as split_parents,
)
from ._predictions import (
    ResidualDecomposition as ResidualDecomposition,
    SplitPrediction as SplitPrediction,
    absorbed_directions as absorbed_directions,
    absorption_critical_lam as absorption_critical_lam,
    absorption_gain as absorption_gain,
    absorption_predicted as absorption_predicted,
    antipodal_codes as antipodal_codes,
    antipodal_rate_binary as antipodal_rate_binary,
    antipodal_rate_gaussian as antipodal_rate_gaussian,
    residual_decomposition as residual_decomposition,
    split_prediction as split_prediction,
)
