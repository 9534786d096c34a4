"""blkback: the PV block device backend (blkif protocol, spec section 12).

``service`` is the process the daemon supervises (``python -m
pyxen.services.blkback``): a ``XenbusBackend`` (services/xenbus_service.py)
of ``vbd.Vbd`` devices, each a ``XenbusDevice`` (the shared handshake) with
a serving thread on its ring (services/ring.py).  ``requests`` decodes, validates and
executes blkif requests of either ABI against a disk image, reaching guest
pages through a ``PageAccess`` (``pages``: grant_copy through the
hypervisor's control socket); ``nbd`` serves qcow2 images through a
private qemu-nbd (``requests.open_image`` picks raw or qcow2).
"""
