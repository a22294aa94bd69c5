"""qaccel: the front door — CLI, end-to-end flow, design-space sweeps, reports and plots."""

__version__ = "0.1.0"
