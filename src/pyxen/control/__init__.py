"""The control socket: how tools and dom0 services talk to the hypervisor process."""
