"""abi layer.

ctypes structures and constants mirroring Xen 4.12's public headers, one
module per header (each module's docstring names it).  Structures are
``LittleEndianStructure`` subclasses named and laid out as in Xen; where a
layout differs for 32-bit guests an i386 ``compat_<name>`` variant exists.
Constants are ``IntEnum`` classes named after Xen's prefix, or plain ints.

Modules: ``errno``, ``xen``, ``version``, ``memory``, ``hvm``, ``sched``,
``vcpu``, ``event_channel``, ``grant_table``, ``start_info``, ``elfnote``,
``console``, ``cpuid``, ``xs_wire``, ``argo``, ``blkif`` (``io/blkif.h`` with
its ``io/ring.h`` ring types); shared primitive types live in ``_types``.  A
header gets its module when a feature uses it: the mirrors of
``io/xenbus.h``, ``hvm/dm_op.h`` and ``hvm/ioreq.h`` written ahead of their
features were removed unused (git history has them, up to commit b08f657).

Every structure here is checked against Xen's real public headers, in both
ABIs, by ``tests/unit/test_abi_headers.py``.
"""
