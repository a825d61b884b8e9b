"""dse: design-space exploration of compact CNNs that stay accurate under adversarial attack.

The Python API (:mod:`dse.api`) runs the same paths as the ``dse`` commands::

    import dse
    dse.run_study("studies/quickstart.yaml")
    trials = dse.load_results("studies/quickstart.yaml")   # a pandas DataFrame
    dse.export("studies/quickstart.yaml", "best.yaml")
    dse.train("best.yaml")
"""

from dse.api import evaluate, export, load_results, load_study, profile_candidate, run_study, train, write_report
from dse.errors import DataError, DseError, SpecError
from dse.version import VERSION

__all__ = [
    "DataError",
    "DseError",
    "SpecError",
    "__version__",
    "evaluate",
    "export",
    "load_results",
    "load_study",
    "profile_candidate",
    "run_study",
    "train",
    "write_report",
]

__version__ = VERSION
