"""netback: the PV network backend (netif protocol).

``service`` is the process the daemon supervises (``python -m
pyxen.services.netback``): a ``XenbusBackend`` (services/xenbus_service.py)
of ``vif.Vif`` devices.  ``packets`` holds netif's slot rules and
checksums, ``tap`` the host's TAP devices and Linux bridges (ioctls only),
``ratelimit`` the credit scheduler behind a vif's ``rate=``.
"""
