"""blkback: the PV block device backend (blkif protocol, spec section 12).

``ring`` is the generic shared ring; ``requests`` decodes, validates and
executes blkif requests of either ABI against a disk image, reaching guest
pages through a ``PageAccess``; ``nbd`` serves qcow2 images through a
private qemu-nbd (``requests.open_image`` picks raw or qcow2).  The service
process (xenstore handshake, the hypervisor's control socket for grants and
events) builds on them.
"""
