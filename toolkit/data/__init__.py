"""Data that ships with the toolkit or is generated: nothing is downloaded at run time."""

from toolkit.data import modular, text
from toolkit.data.modular import ModularSplit, modular_arithmetic
from toolkit.data.text import TextSplit

__all__ = ["ModularSplit", "TextSplit", "modular", "modular_arithmetic", "text"]
