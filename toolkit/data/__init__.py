"""Data that ships with the toolkit or is generated: nothing is downloaded at run time."""

from toolkit.data import digits, modular, text
from toolkit.data.digits import Digits, DigitsSplit, digits_split, load_digits
from toolkit.data.modular import ModularSplit, modular_arithmetic
from toolkit.data.text import TextSplit

__all__ = [
  "Digits",
  "DigitsSplit",
  "ModularSplit",
  "TextSplit",
  "digits",
  "digits_split",
  "load_digits",
  "modular",
  "modular_arithmetic",
  "text",
]
