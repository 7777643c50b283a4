"""The version of chaveiro, in one place.

``setup.cfg`` reads it (``version = attr: chaveiro._version.__version__``), and so do
``chaveiro.__version__``, ``chaveiro --version``, the OpenTelemetry meter and tracer,
and the documentation. Importing this module imports nothing else.
"""

__all__ = ["__version__"]

__version__ = "0.3.0.dev0"
