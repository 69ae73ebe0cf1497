"""daw-bridge: AI music source separation for the REAPER DAW."""

__version__ = "0.1.0"
