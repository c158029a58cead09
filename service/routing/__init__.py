"""Routing: which model runs a task, and what happens when it fails."""
