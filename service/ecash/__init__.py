"""Cashu ecash: the operator's wallet at each allowed mint (a nutshell wallet, run in its own
interpreter: see :mod:`.wallet`)."""
