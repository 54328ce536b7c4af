"""toolkit: a JAX functional research toolkit.

Each paper lives under one field's subpackage (``toolkit.losses``, ``toolkit.optim``, ``toolkit.ot``, ...) as pure,
jit-compatible functions. ``WORKSPACE.md`` maps the papers to their modules.
"""

__version__ = "0.1.0"
