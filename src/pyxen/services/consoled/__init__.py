"""consoled: the PV console backend for every domain (xenconsoled's role)."""
