"""Data that ships with the toolkit or is generated: nothing is downloaded at run time."""

from toolkit.data import text
from toolkit.data.modular import ModularSplit
from toolkit.data.modular import modular_arithmetic

__all__ = ["ModularSplit", "modular_arithmetic", "text"]
