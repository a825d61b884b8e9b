"""dse: design-space exploration of compact CNNs that stay accurate under adversarial attack."""

from dse.errors import DataError, DseError, SpecError

__all__ = ["DataError", "DseError", "SpecError", "__version__"]

__version__ = "0.1.0"
