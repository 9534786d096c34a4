"""argo_op (hypercall 39): the guest's side of Argo (§11).

Decodes the arguments from guest memory and registers, in the order Xen
4.12.1's do_argo_op checks them, and calls ``pyxen.hv.argo.core``:

1. ``arg3`` and ``arg4`` must fit in 32 bits (-EINVAL), before anything else;
2. Argo off: -EOPNOTSUPP; the policy's ``enable`` refused: -EPERM;
3. per command: register_ring takes ``npages`` up to 4096 (-EINVAL) and
   ``flags`` with only FAIL_EXIST (-EINVAL); unregister_ring and notify take
   no ``arg2``/``arg3``/``arg4`` (-EINVAL); sendv takes at most 8 iovs and
   reads the address pair first (-EFAULT); an unknown command is
   -EOPNOTSUPP.

A 32-bit caller's iovs are 12 bytes (a 32-bit handle); everything else has
one layout.  Ring pages are pinned while registered (core.py); the source
bytes of a send are resolved to host memory with large guest pages kept
whole, so a megabyte message is a few copies.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from pyxen.abi import argo as a
from pyxen.abi.argo import XEN_ARGO_MAXIOV, XEN_ARGO_REGISTER_FLAG_MASK, ArgoOp
from pyxen.abi.errno import XenErrno
from pyxen.hv.argo import ring as R
from pyxen.hv.argo.core import Argo
from pyxen.hv.dispatch import Call
from pyxen.hv.domain import Domain
from pyxen.hv.errors import HypercallError
from pyxen.memory import PAGE_SIZE, Gfn, PageKind

_U32 = 0xFFFF_FFFF
_ENT = ctypes.sizeof(a.xen_argo_ring_data_ent)
_ENT_FLAGS = a.xen_argo_ring_data_ent.flags.offset
_ENT_MAX = a.xen_argo_ring_data_ent.max_message_size.offset
_DATA = ctypes.sizeof(a.xen_argo_ring_data)


def do_argo_op(call: Call, cmd: int, arg1: int, arg2: int, arg3: int, arg4: int,
               *_: int) -> int:
    if arg3 > _U32 or arg4 > _U32:
        return -XenErrno.EINVAL
    argo = call.domain.hv.argo
    domid = call.domain.domid
    argo.enabled_for(domid)
    cmd &= _U32
    if cmd == ArgoOp.register_ring:
        return _register(call, argo, arg1, arg2, arg3, arg4)
    if cmd == ArgoOp.unregister_ring:
        if arg2 or arg3 or arg4:
            return -XenErrno.EINVAL
        u = call.guest.read_struct(arg1, a.xen_argo_unregister_ring)
        argo.unregister(domid, u.aport, u.partner_id, u.pad)
        return 0
    if cmd == ArgoOp.sendv:
        return _sendv(call, argo, arg1, arg2, arg3, arg4)
    if cmd == ArgoOp.notify:
        if arg2 or arg3 or arg4:
            return -XenErrno.EINVAL
        return _notify(call, argo, arg1)
    return -XenErrno.EOPNOTSUPP


def _register(call: Call, argo: Argo, reg_addr: int, gfns_addr: int, npages: int,
              flags: int) -> int:
    if npages > R.MAX_RING_PAGES or flags & ~XEN_ARGO_REGISTER_FLAG_MASK:
        return -XenErrno.EINVAL
    reg = call.guest.read_struct(reg_addr, a.xen_argo_register_ring)
    domain = call.domain

    def pages() -> tuple[list[int], Callable[[], None]]:
        raw = call.guest.read(gfns_addr, 8 * npages)
        gfns = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
        return pin_ring_pages(domain, gfns)

    argo.register(domain.domid, reg.aport, reg.partner_id, reg.pad, reg.len, npages,
                  bool(flags & a.XEN_ARGO_REGISTER_FLAG_FAIL_EXIST), pages)
    return 0


def pin_ring_pages(domain: Domain, gfns: list[int]) -> tuple[list[int], Callable[[], None]]:
    """Host addresses of the pages at ``gfns``, each pinned for the ring (Xen's
    get_page_and_type): -EINVAL unless every one is the domain's own writable
    memory.  That includes the hypervisor pages it mapped (shared_info, grant
    frames), which Xen shares with the guest as writable pages and accepts
    too; a grant-mapped frame of another domain is refused."""
    pinned: list[int] = []

    def release() -> None:
        for page in pinned:
            domain.grants.release_page(page)

    with domain.lock:
        for gfn in gfns:
            found = domain.memory.lookup(Gfn(gfn)) if 0 <= gfn < domain.max_gfn else None
            if found is None or found[1] is PageKind.FOREIGN:
                release()
                raise HypercallError(XenErrno.EINVAL)
            domain.grants.hold_page(found[0])
            pinned.append(found[0])
    base = domain.memory.host_base
    return [base + page * PAGE_SIZE for page in pinned], release


def _sendv(call: Call, argo: Argo, addr: int, iovs_addr: int, niov: int, message_type: int
           ) -> int:
    send = call.guest.read_struct(addr, a.xen_argo_send_addr)
    if niov > XEN_ARGO_MAXIOV:
        return -XenErrno.EINVAL
    iov_type = a.compat_xen_argo_iov if call.compat else a.xen_argo_iov
    size = ctypes.sizeof(iov_type)
    iovs = [call.guest.read_struct(iovs_addr + i * size, iov_type) for i in range(niov)]
    guest = call.guest

    def source(i: int) -> list[tuple[int, int]]:
        return guest.host_spans(iovs[i].iov_hnd, iovs[i].iov_len)

    src, dst = send.src, send.dst
    return argo.sendv(call.domain.domid, src.aport, src.domain_id, src.pad, dst.aport,
                      dst.domain_id, dst.pad, [v.iov_len for v in iovs],
                      [v.pad for v in iovs], message_type, source)


def _notify(call: Call, argo: Argo, data_addr: int) -> int:
    domid = call.domain.domid
    argo.notify_pending(domid)
    if data_addr == 0:
        return 0
    nent = call.guest.read_struct(data_addr, a.xen_argo_ring_data).nent  # all 8 bytes, as Xen
    if nent > R.MAX_NOTIFY_COUNT:
        return -XenErrno.EACCES
    for i in range(nent):
        at = data_addr + _DATA + i * _ENT
        ent = call.guest.read_struct(at, a.xen_argo_ring_data_ent)
        found = argo.query(domid, ent.ring.domain_id, ent.ring.aport, ent.space_required)
        call.guest.write(at + _ENT_FLAGS, int(found.flags).to_bytes(2, "little"))
        if found.max_message_size is not None:
            call.guest.write(at + _ENT_MAX, found.max_message_size.to_bytes(4, "little"))
    return 0
