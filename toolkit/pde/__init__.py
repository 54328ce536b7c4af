"""Partial differential equations: the discrete physics-informed loss of ODIL/GliODIL for tumour growth (``odil``)."""
