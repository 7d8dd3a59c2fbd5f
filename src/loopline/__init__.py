"""loopline: the whole machine-learning loop on one machine, scaling out when needed."""

__version__ = "0.1.0"
