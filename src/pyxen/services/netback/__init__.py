"""netback: the PV network device backend (netif protocol).

``tap`` gives the backend its host side: a TAP device (with a virtio-net
header for checksum offload) on a Linux bridge; ``ratelimit`` is netback's
credit scheduler for a vif's ``rate=``.
"""
