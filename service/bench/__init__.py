"""Model benchmarking: a fixed prompt suite across models, scored, timed, costed and kept."""
