"""hallmon: monitoring daemon and maintenance log for a public service hall."""

__version__ = "0.1.0"
