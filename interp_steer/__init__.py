"""interp-steer: learn, apply and explain steering vectors with TransformerLens and SAELens."""

from interp_steer.errors import InterpSteerError
from interp_steer.models import load_model, model_fingerprint
from interp_steer.saes import load_sae

__version__ = "0.1.0"

__all__ = ["InterpSteerError", "load_model", "load_sae", "model_fingerprint"]
