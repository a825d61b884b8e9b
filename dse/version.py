"""dse's version, in one place (``dse.__version__``, ``dse --version``, exported candidate files)."""

__all__ = ["VERSION"]

VERSION = "0.2.0"
