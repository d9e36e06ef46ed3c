"""Shared intervention layer and the ``SteeringVector`` artifact."""

from interp_steer.steering.interventions import (
    AffineIntervention,
    DenseIntervention,
    Intervention,
    SAEIntervention,
    SteeringHandle,
    StepState,
    attach,
    interventions_for,
    steer,
)
from interp_steer.steering.vector import SteeringVector

__all__ = [
    "AffineIntervention", "DenseIntervention", "Intervention", "SAEIntervention", "SteeringHandle",
    "SteeringVector", "StepState", "attach", "interventions_for", "steer",
]
