"""hv layer."""
