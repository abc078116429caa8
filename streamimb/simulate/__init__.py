"""Synthetic streams for the demo and examples (no data files needed)."""
