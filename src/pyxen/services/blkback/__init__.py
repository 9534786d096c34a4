"""blkback: the PV block device backend (blkif protocol, spec section 12).

``service`` is the process the daemon supervises (``python -m
pyxen.services.blkback``): it follows xenstore and keeps one ``vbd.Vbd``
per device, each with its handshake state machine and a serving thread.
``ring`` is the generic shared ring; ``requests`` decodes, validates and
executes blkif requests of either ABI against a disk image, reaching guest
pages through a ``PageAccess`` (``pages``: grant_copy through the
hypervisor's control socket); ``nbd`` serves qcow2 images through a
private qemu-nbd (``requests.open_image`` picks raw or qcow2).
"""
