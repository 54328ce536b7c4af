"""Linear algebra: low-rank matrix completion by robust alternating minimisation (``matrix_completion``)."""
