"""Stem file formats, kept apart from the audio code so the CLI can list them cheaply."""

from typing import Literal

SampleFormat = Literal["float32", "int24", "int16"]
SAMPLE_FORMATS: tuple[str, ...] = ("float32", "int24", "int16")
