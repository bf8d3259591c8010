"""Hardware cost model: per-device linear latency over a space's cost features, fast batched prediction."""

from nas.cost.calibrate import calibrate, measure_latency_ms
from nas.cost.expected import expected_latency, expected_latency_batch
from nas.cost.kernel import predict_numba
from nas.cost.model import CostModel, load_or_calibrate, predict_many, space_signature
from nas.cost.profile import FORMAT_VERSION, DeviceProfile, ProfileError, default_profile_path
from nas.cost.reference import predict_reference
from nas.cost.specs import SPECS, DeviceSpec, SpecError, get_spec, list_specs, load_specs, spec_profile

__all__ = [
    "FORMAT_VERSION",
    "SPECS",
    "CostModel",
    "DeviceProfile",
    "DeviceSpec",
    "ProfileError",
    "SpecError",
    "calibrate",
    "default_profile_path",
    "expected_latency",
    "expected_latency_batch",
    "get_spec",
    "list_specs",
    "load_specs",
    "load_or_calibrate",
    "measure_latency_ms",
    "predict_many",
    "predict_numba",
    "predict_reference",
    "space_signature",
    "spec_profile",
]
