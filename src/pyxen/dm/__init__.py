"""The device-model (DM) process of an HVM domain, and its sandbox."""
