"""Errors a user can act on.

Every failure that reaches a producer must say what went wrong *and* how to fix
it, so each error carries a ``fix`` next to its ``problem``. The CLI (and later
the server) print these without a traceback.
"""

from __future__ import annotations


class DawBridgeError(Exception):
    """Base class: a problem the user can fix, with the fix spelled out."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.problem}\nHow to fix: {self.fix}"
        return self.problem


class AudioInputError(DawBridgeError):
    """The input audio cannot be read or is not usable for separation."""


class OutputExistsError(DawBridgeError):
    """Writing would overwrite a file the user already has."""


class OutputFolderError(DawBridgeError):
    """The output folder cannot be created or written to."""


class StateFolderError(DawBridgeError):
    """The server's state folder (job records, uploads, stem cache) cannot be written."""


class ModelUnavailableError(DawBridgeError):
    """Model weights cannot be found, downloaded or verified."""


class ModelOutputError(DawBridgeError):
    """The network computed samples that are not numbers (NaN or infinity): written out,
    they would be silence or full-scale noise, so nothing is written."""

    PROBLEM = "The separation produced samples that are not numbers (NaN or infinity)"

    @classmethod
    def in_float32(cls, detail: str = "") -> ModelOutputError:
        """NaN without reduced precision to blame: the weights are damaged."""
        return cls(
            f"{cls.PROBLEM} in float32{detail}: the model's weights are probably damaged. "
            "Nothing was written.",
            "Delete the model's file so that it is downloaded again, or choose another "
            "model with --model.",
        )


class InvalidOptionError(DawBridgeError):
    """An option has a value that cannot work."""


class CancelledError(DawBridgeError):
    """The job was cancelled by its caller; nothing was written."""

    def __init__(self) -> None:
        super().__init__("Separation was cancelled.")
