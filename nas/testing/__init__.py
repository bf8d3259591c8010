"""Contract suites for the engine's extension points, importable by code outside this repository.

Like Optuna's ``optuna.testing``: a new search space, supernet kind, controller or
sampling rule proves it behaves by subclassing the matching contract in a test
file and providing its fixture::

    from nas.testing import SearchSpaceContract

    class TestMySpace(SearchSpaceContract):
        @pytest.fixture
        def space(self):
            return MySpace(num_classes=10, in_channels=1)

The engine's own tests run every contract over every registered member. This
package needs pytest (the ``dev`` extra) and is never imported by the engine.
"""

from nas.testing.controllers import ControllerContract
from nas.testing.kinds import SupernetKindContract
from nas.testing.sampling import SamplingRuleContract
from nas.testing.spaces import SearchSpaceContract

__all__ = ["ControllerContract", "SamplingRuleContract", "SearchSpaceContract", "SupernetKindContract"]
