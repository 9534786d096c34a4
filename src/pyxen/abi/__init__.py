"""abi layer.

ctypes structures and constants mirroring Xen 4.12's public headers, one
module per header (each module's docstring names it).  Structures are
``LittleEndianStructure`` subclasses named and laid out as in Xen; where a
layout differs for 32-bit guests an i386 ``compat_<name>`` variant exists.
Constants are ``IntEnum`` classes named after Xen's prefix, or plain ints.

Modules: ``errno``, ``xen``, ``version``, ``memory``, ``hvm``, ``ioreq``,
``dm_op``, ``sched``, ``vcpu``, ``event_channel``, ``grant_table``,
``start_info``, ``elfnote``, ``console``, ``cpuid``, ``xs_wire``, ``ring``,
``xenbus``, ``blkif``, ``argo``; shared primitive types live in ``_types``.
"""
