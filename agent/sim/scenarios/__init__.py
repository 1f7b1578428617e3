"""Scenario files that ship with xnuma: ``xnuma sim seed-abc`` finds them by name."""
