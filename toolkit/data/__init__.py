"""Data that ships with the toolkit or is generated: nothing is downloaded at run time."""

from toolkit.data import digits, mnist1d, modular, text
from toolkit.data.digits import Digits, DigitsSplit, digits_split, load_digits
from toolkit.data.mnist1d import Mnist1d, Mnist1dSplit, Mnist1dTransform, make_mnist1d, mnist1d_split, mnist1d_templates
from toolkit.data.modular import ModularSplit, modular_arithmetic
from toolkit.data.text import TextSplit

__all__ = [
  "Digits",
  "DigitsSplit",
  "Mnist1d",
  "Mnist1dSplit",
  "Mnist1dTransform",
  "ModularSplit",
  "TextSplit",
  "digits",
  "digits_split",
  "load_digits",
  "make_mnist1d",
  "mnist1d",
  "mnist1d_split",
  "mnist1d_templates",
  "modular",
  "modular_arithmetic",
  "text",
]
