"""Hardware cost model: per-device latency tables over a space's ops, fast batched prediction, profile
store."""

from nas.cost.calibrate import calibrate, measure_latency_ms
from nas.cost.expected import expected_latency, expected_latency_batch
from nas.cost.kernel import predict_table_numba
from nas.cost.model import CostModel, predict_many
from nas.cost.profile import FORMAT_VERSION, DeviceProfile, ProfileError, space_signature
from nas.cost.reference import predict_reference
from nas.cost.runtimes import RUNTIMES, Runtime, get_runtime
from nas.cost.specs import SPECS, DeviceSpec, SpecError, get_spec, list_specs, load_specs, spec_profile
from nas.cost.store import PROFILE_IN_RUN, default_profile_path, load_or_calibrate, profile_for

__all__ = [
    "FORMAT_VERSION",
    "PROFILE_IN_RUN",
    "RUNTIMES",
    "SPECS",
    "CostModel",
    "DeviceProfile",
    "DeviceSpec",
    "ProfileError",
    "Runtime",
    "SpecError",
    "calibrate",
    "default_profile_path",
    "expected_latency",
    "expected_latency_batch",
    "get_runtime",
    "get_spec",
    "list_specs",
    "load_specs",
    "load_or_calibrate",
    "measure_latency_ms",
    "predict_many",
    "predict_reference",
    "predict_table_numba",
    "profile_for",
    "space_signature",
    "spec_profile",
]
