"""toolstack layer."""
