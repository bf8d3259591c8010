"""Search controllers behind one ask/tell interface, selected by name (:data:`CONTROLLERS`).

Importing the package registers every controller.
"""

from nas.controllers import evolution as _evolution  # noqa: F401  (registers evolution)
from nas.controllers import gradient as _gradient  # noqa: F401  (registers darts, gdas)
from nas.controllers import optuna_controller as _optuna  # noqa: F401  (nsga2, nsga3, tpe, gp, random)
from nas.controllers import predictor as _predictor  # noqa: F401  (registers predictor)
from nas.controllers import qmc as _qmc  # noqa: F401  (registers qmc)
from nas.controllers import reinforce as _reinforce  # noqa: F401  (registers reinforce)
from nas.controllers.base import (
    CONTROLLERS,
    Controller,
    Objectives,
    SearchSpaceExhausted,
    controller_options,
    create_controller,
    list_controllers,
    register_controller,
)

__all__ = [
    "CONTROLLERS",
    "Controller",
    "Objectives",
    "SearchSpaceExhausted",
    "controller_options",
    "create_controller",
    "list_controllers",
    "register_controller",
]
