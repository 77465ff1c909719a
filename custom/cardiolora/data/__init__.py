"""Data: the synthetic multi-vendor cine phantoms, their writers, and loaders for real layouts."""
