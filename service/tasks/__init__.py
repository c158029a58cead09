"""The paid-task engine: states, settlement, running, reconciliation, recovery."""
