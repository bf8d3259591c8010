"""Training: the trainer loop, checkpoints, step plans (one per supernet kind that needs its own), sampling
rules,
augmentation and multi-process training.

Importing the package registers every step plan (``single_path``).
"""

from nas.training import plans as _plans  # noqa: F401
from nas.training import single_path as _single_path  # noqa: F401  (registers the single_path step plan)
