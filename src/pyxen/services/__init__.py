"""Service processes started beside the hypervisor (xenstored, ...).

Each service is its own process and talks to the hypervisor only through its
control socket, so that a crash of one never takes a guest down.
"""
