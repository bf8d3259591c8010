"""Hardware cost model: per-device linear latency over a space's cost features, fast batched prediction."""

from nas.cost.calibrate import calibrate, measure_latency_ms
from nas.cost.kernel import predict_numba
from nas.cost.model import CostModel, load_or_calibrate, space_signature
from nas.cost.profile import FORMAT_VERSION, DeviceProfile, ProfileError, default_profile_path
from nas.cost.reference import predict_reference

__all__ = [
    "FORMAT_VERSION",
    "CostModel",
    "DeviceProfile",
    "ProfileError",
    "calibrate",
    "default_profile_path",
    "load_or_calibrate",
    "measure_latency_ms",
    "predict_numba",
    "predict_reference",
    "space_signature",
]
