"""jaxsae: certified optimality for sparse dictionaries and sparse autoencoders.

The whole public API is listed here; the mathematics is in docs/theory.md.

Where things live (layers import only downward):

- ``_streaming.py``: every pass over data is *chunk statistics → combine →
  finish*; where the data lives is a strategy (``Resident``: a compiled scan over
  device arrays; ``Streamed``: a host loop over memmaps / chunk lists, sharded over
  a mesh). No capability has a separate streamed variant.
- ``models/``: ``Dictionary``, ``SAE`` (activations, penalties), the objective and
  the first-order residual formula (``_objective.atom_first_order``).
- ``solvers/``: where a new solver goes. ``_iterate.py`` is the one driver
  (``AbstractIterativeSolver``: ``init / step / terminate``; ``iterate`` owns
  max-steps, non-finite iterates, ``RESULTS``, ``throw=`` and the per-step hook;
  ``Compiled`` / ``Host`` say where the loop runs). Also the sparse coder
  (``_lasso.sparse_code``: homotopy kernel ``_lars.cc`` / ``_homotopy.py``, then
  gathered rounds of block steps and exact polishes on the driver, ``_coder.py``;
  settings in ``CoderSettings``), one FISTA and one Lipschitz estimate (``_fista.py``), the LP
  of the GS10 checks, KKT residuals and result codes.
- ``certificates/``: ``certify`` (``_certify.py``; the pass in ``_first_order.py``),
  ``second_order`` (resident Hessian ``_hessian.py``, streamed one
  ``_second_order_streamed.py``, one spectral step ``_spectrum.py``, one Lanczos
  ``_lanczos.py`` with compiled or host products), GS10, splitting, ``evaluate``.
- ``convex/``: the wide limit and the convex candidate problem (solvers on ``iterate``).
- ``learning/``: the dictionary learner (``_dictionary_learning.py``): its two
  phases are solvers on ``iterate`` (``_dl_driver.py``), the steps are in
  ``_dl_steps.py`` (one L-BFGS step for all data), and where the data lives is a
  strategy: ``_dl_driver.ResidentData`` or ``_dl_stream.StreamedData`` (one pass
  per trial point). Also ``train_sae`` (its step, shared with the SAE sweep, in
  ``_sae_step.py``) and ``sweep`` (a learner strategy: ``DictionaryLearner`` or
  ``SAETrainer``).
- Ground floor, imported by any layer: ``_validate.py``, ``_streaming.py``,
  ``_sharding.py``, ``_rows.py`` (minibatch reads), and durable writes:
  ``_atomic.py`` (temporary file, then rename), ``_lock.py`` (one process per run
  folder), ``_checkpoint.py`` (checkpoint folders). Numerical layers never import ``io/``.
- ``phenomena/``, then ``io/`` (file formats: arrays, dictionaries, SAELens folders),
  ``cli/``, ``report/``, ``plots/`` on top.
"""

from .models._dictionary import Dictionary as Dictionary
from .models._objective import huber as huber, objective as objective, residuals as residuals
from .solvers._kkt import KKTResidual as KKTResidual, kkt_residual as kkt_residual
from .solvers._lasso import CodeSolution as CodeSolution, sparse_code as sparse_code
from .solvers._results import RESULTS as RESULTS
from .solvers._iterate import (  # the one driver: subclass the Module, call iterate
    AbstractIterativeSolver as AbstractIterativeSolver,
    Compiled as Compiled,
    Host as Host,
    Solution as Solution,
    iterate as iterate,
)
from .io._arrays import load_array as load_array
from .io._dictionary_file import (
    load_dictionary as load_dictionary,
    save_dictionary as save_dictionary,
)
from .io._saved import saved_lam as saved_lam, saved_objective as saved_objective
from .certificates._wide import wide_bound as wide_bound
from .certificates._first_order import Certificate as Certificate
from .certificates._certify import certify as certify

# Second order, GS10 λ → 0 checks for bases, splitting and adding atoms (THEORY §4, §5)
from .certificates._second_order import (
    DenseHessian as DenseHessian,
    SecondOrder as SecondOrder,
    hessian_operator as hessian_operator,
    second_order as second_order,
    second_order_dense as second_order_dense,
)
from .certificates._hessian import RiemannianHessian as RiemannianHessian
from .certificates._gs10 import GS10Check as GS10Check, gs10_check as gs10_check
from .certificates._splitting import (
    add_atom_gain as add_atom_gain,
    split_atom as split_atom,
    split_scores as split_scores,
)

# SAEs: modules, training, SAELens files, amortisation gap, metrics (THEORY §1, §7b)
from .models._activations import (
    AbstractActivation as AbstractActivation,
    JumpReLU as JumpReLU,
    ReLU as ReLU,
    TopK as TopK,
)
from .models._penalties import (
    AbstractPenalty as AbstractPenalty,
    DecoderNormL1 as DecoderNormL1,
    L0 as L0,
    L1 as L1,
    NoPenalty as NoPenalty,
)
from .models._sae import SAE as SAE, fold_decoder_norms as fold_decoder_norms
from .models._sae_dictionary import sae_codes as sae_codes, sae_dictionary as sae_dictionary
from .models._metrics import (
    dead_latents as dead_latents,
    dense_latents as dense_latents,
    explained_variance as explained_variance,
    firing_rate as firing_rate,
    fvu as fvu,
    l0 as l0,
    shrinkage as shrinkage,
)
from .certificates._amortisation import (
    AmortisationGap as AmortisationGap,
    amortisation_gap as amortisation_gap,
)
from .learning._sae_step import TrainState as TrainState
from .learning._train_sae import TrainResult as TrainResult, train_sae as train_sae
from .io._saelens import load_sae_certificate as load_sae_certificate, save_sae as save_sae
from .io._sae_formats import load_sae as load_sae  # SAELens, Gemma Scope, sparsify, HF cache

# Dictionary learning on the joint problem (THEORY §0, (A))
from .learning._dl_policy import (
    AbstractDeadAtomPolicy as AbstractDeadAtomPolicy,
    KeepDead as KeepDead,
    ReseedDead as ReseedDead,
)
from .learning._dl_setup import (
    DictionaryHistory as DictionaryHistory,
    LearningResult as LearningResult,
)
from .learning._dictionary_learning import learn_dictionary as learn_dictionary
from .learning._sweep import (
    AbstractLearner as AbstractLearner,
    DictionaryLearner as DictionaryLearner,
    SAETrainer as SAETrainer,
    sweep as sweep,
)
from .learning._dl_sweep_result import SweepResult as SweepResult
from .phenomena._family_tree import FamilyTree as FamilyTree, family_tree as family_tree

# Phenomena (THEORY §7): predictions before learning, measurements after
from . import phenomena as phenomena
from .phenomena import (
    Absorption as Absorption,
    AntipodalPairs as AntipodalPairs,
    ResidualDecomposition as ResidualDecomposition,
    absorbed_directions as absorbed_directions,
    absorption as absorption,
    absorption_critical_lam as absorption_critical_lam,
    absorption_gain as absorption_gain,
    absorption_predicted as absorption_predicted,
    antipodal_pairs as antipodal_pairs,
    antipodal_rate_binary as antipodal_rate_binary,
    antipodal_rate_gaussian as antipodal_rate_gaussian,
    dark_matter_r2 as dark_matter_r2,
    mcc as mcc,
    mmcs as mmcs,
    residual_decomposition as residual_decomposition,
    SplitPrediction as SplitPrediction,
    split_prediction as split_prediction,
)

# The wide limit (W) and the convex candidate problem (THEORY §6)
from .convex._wide_limit import WideLimit as WideLimit, wide_limit as wide_limit
from .convex._candidates import (
    CandidateSolution as CandidateSolution,
    default_candidates as default_candidates,
    solve_candidate_problem as solve_candidate_problem,
)
from .convex._path import candidate_path as candidate_path

# Scale: streaming over memmaps / chunk iterables, data- and atom-parallel meshes
from .certificates._evaluate import Evaluation as Evaluation, evaluate as evaluate
from ._sharding import (
    data_mesh as data_mesh,
    model_mesh as model_mesh,
    replicate as replicate,
    shard_atoms as shard_atoms,
    shard_rows as shard_rows,
    shard_sae as shard_sae,
)

# Diagnosis of a trained SAE: distance to an optimum, broken constraints, the nearest optimum
from .diagnosis import Diagnosis as Diagnosis, diagnose as diagnose
from .report._diagnosis import write_report as write_report

# Data: synthetic worlds, MiniLM activations, image patches (optional packages looked up lazily)
from . import data as data

__version__ = "0.1.0"
