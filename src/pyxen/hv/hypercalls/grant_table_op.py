"""grant_table_op (hypercall 20) for HVM/PVH callers (§7.4).

The state and the rules live in ``pyxen.hv.grant_table``; this module reads
the arguments, loops over batches and writes results back the way Xen 4.12
does (``xen/common/grant_table.c``, filtered by
``xen/arch/x86/hvm/hypercall.c``):

- ``cmd`` and ``count`` are C ``unsigned int``s (the registers are
  truncated to 32 bits).  An HVM caller may use only query_size,
  setup_table, set_version, get_version, copy, map_grant_ref,
  unmap_grant_ref and swap_grant_ref; Xen's HVM filter compares the whole
  ``cmd``, so any other value -- including one of those with continuation
  bits set -- is -ENOSYS.  Then ``count >= 2^31`` is -EINVAL.
- Batch ops (copy, map, unmap, swap) return 0 and give each element its
  own status; a fault reading an element, or writing its status, is
  -EFAULT (the elements before it are done).
- A batch stops at a preemption point between two elements (never before
  the first: each invocation makes progress) and is restarted as Xen's
  do_grant_table_op restarts it: the same cmd, ``uop`` advanced past the
  elements done (in the caller's element size: compat gnttab_copy is
  smaller) and ``count`` reduced by them (dispatch.Continuation).  So a
  batch of 2^31 - 1 elements never holds up a pause, a destroy or the
  scheduler for longer than one element, and a batch interrupted and
  restarted gives the statuses an uninterrupted one gives.  (Xen's unmap
  checks only every 32 elements; the statuses are the same.)
- setup_table and query_size need ``count == 1``; domain problems are
  reported in ``status`` (GNTST_bad_domain, GNTST_permission_denied), not
  as -errno.  set_version/get_version ignore ``count``.

setup_table's ``frame_list``: Xen fills it with ``mfn_to_gmfn`` of each
frame, which for a translated (HVM/PVH) guest is the M2P entry: the GFN
where the guest mapped that frame with add_to_physmap, or
INVALID_M2P_ENTRY (all ones) while it is mapped nowhere (Xen sets a heap
page's M2P entry to invalid when it shares it).  pyxen's frames have no
machine address, so this answer -- the GFN, or all ones -- is also the
only one it can give.  i386 callers get the low 32 bits.

map_grant_ref reports ``dev_bus_addr`` 0 (there is no machine address);
unmap_grant_ref therefore fails (GNTST_general_error) for any non-zero
``dev_bus_addr``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from pyxen.abi import grant_table as g
from pyxen.abi.errno import XenErrno
from pyxen.abi.grant_table import GnttabOp, GnttabStatus
from pyxen.abi.xen import DOMID_SELF
from pyxen.hv.dispatch import Call, Continuation
from pyxen.hv.domain import Domain
from pyxen.hv.grant_table import Acquired, GrantError, guest_map, guest_unmap
from pyxen.hv.hypercalls.domids import target_domain
from pyxen.memory import PAGE_SIZE, GuestFault

S = GnttabStatus
_M32 = 0xFFFF_FFFF
INVALID_FRAME = (1 << 64) - 1  # INVALID_M2P_ENTRY

# Ops Xen 4.12's hvm_grant_table_op passes on; everything else is -ENOSYS.
HVM_OPS = frozenset({
    GnttabOp.query_size, GnttabOp.setup_table, GnttabOp.set_version,
    GnttabOp.get_version, GnttabOp.copy, GnttabOp.map_grant_ref,
    GnttabOp.unmap_grant_ref, GnttabOp.swap_grant_ref,
})

Handler = Callable[[Call, int, int], int]


def do_grant_table_op(call: Call, cmd: int, uop: int, count: int, *_: int) -> int:
    cmd &= _M32
    count &= _M32
    handler = _HANDLERS.get(cmd)
    if handler is None:
        if cmd in GnttabOp._value2member_map_:
            name = GnttabOp(cmd).name
            call.domain.log_once(
                f"gnttab-{cmd}",
                f"grant_table_op sub-op {cmd} ({name}) is not available to HVM/PVH "
                "guests (as in Xen 4.12): -ENOSYS")
        return -XenErrno.ENOSYS
    if count >= 1 << 31:
        return -XenErrno.EINVAL
    return handler(call, uop, count)


def _preempt(call: Call, cmd: int, uop: int, count: int, done: int, size: int) -> None:
    """A preemption point after ``done`` elements (of ``size`` bytes) of a batch."""
    if done and call.preempted():
        raise Continuation(cmd, (uop + done * size) & call.ulong_mask, count - done)


def _status_domain(call: Call, domid: int) -> Domain | int:
    """rcu_lock_domain_by_any_id + XSM_TARGET, as a GNTST status on failure."""
    domid &= 0xFFFF
    me = call.domain
    if domid in (DOMID_SELF, me.domid):
        return me
    if not me.hv.domain_exists(domid):
        return S.bad_domain
    target = me.hv.domains.get(domid)
    if me.privileged and target is not None:
        return target
    return S.permission_denied


def _write_status(call: Call, addr: int, status: int) -> None:
    call.guest.write(addr, (status & 0xFFFF).to_bytes(2, "little"))


# -- single ops ----------------------------------------------------------------------


def _setup_table(call: Call, uop: int, count: int) -> int:
    if count != 1:
        return -XenErrno.EINVAL
    ctype: type[ctypes.Structure] = (g.compat_gnttab_setup_table if call.compat
                                      else g.gnttab_setup_table)
    op = call.guest.read_struct(uop, ctype)
    status: int = S.okay
    d = _status_domain(call, op.dom)
    if isinstance(d, int):
        status = d
    elif not d.grants.setup(int(op.nr_frames)):
        status = S.general_error
    else:
        word = 4 if call.compat else 8
        for i in range(int(op.nr_frames)):
            gfn = d.grant_frame_gfns.get(i)
            frame = INVALID_FRAME if gfn is None else gfn
            try:
                call.guest.write(op.frame_list + i * word,
                                 (frame & ((1 << (8 * word)) - 1)).to_bytes(word, "little"))
            except GuestFault:
                status = S.bad_virt_addr
    _write_status(call, uop + ctype.status.offset, status)
    return 0


def _query_size(call: Call, uop: int, count: int) -> int:
    if count != 1:
        return -XenErrno.EINVAL
    op = call.guest.read_struct(uop, g.gnttab_query_size)
    d = _status_domain(call, op.dom)
    if isinstance(d, int):
        op.status = d
    else:
        with d.grants.lock:
            op.nr_frames = d.grants.nr_frames
            op.max_nr_frames = d.grants.max_frames
        op.status = S.okay
    call.guest.write_struct(uop, op)
    return 0


def _set_version(call: Call, uop: int, _count: int) -> int:
    op = call.guest.read_struct(uop, g.gnttab_set_version)
    rc, version = call.domain.grants.set_version(int(op.version))
    op.version = version
    call.guest.write_struct(uop, op)
    return rc


def _get_version(call: Call, uop: int, _count: int) -> int:
    op = call.guest.read_struct(uop, g.gnttab_get_version)
    d = target_domain(call, op.dom)
    call.guest.write_u32(uop + g.gnttab_get_version.version.offset, d.grants.version)
    return 0


# -- batches ---------------------------------------------------------------------------


def _swap(call: Call, uop: int, count: int) -> int:
    size = ctypes.sizeof(g.gnttab_swap_grant_ref)
    for i in range(count):
        _preempt(call, GnttabOp.swap_grant_ref, uop, count, i, size)
        addr = uop + i * size
        op = call.guest.read_struct(addr, g.gnttab_swap_grant_ref)
        status = call.domain.grants.swap(int(op.ref_a), int(op.ref_b))
        _write_status(call, addr + g.gnttab_swap_grant_ref.status.offset, status)
    return 0


def _map(call: Call, uop: int, count: int) -> int:
    size = ctypes.sizeof(g.gnttab_map_grant_ref)
    me = call.domain
    for i in range(count):
        _preempt(call, GnttabOp.map_grant_ref, uop, count, i, size)
        addr = uop + i * size
        op = call.guest.read_struct(addr, g.gnttab_map_grant_ref)
        flags = int(op.flags)
        if not flags & (g.GNTMAP_device_map | g.GNTMAP_host_map):
            op.status = S.bad_gntref
        elif flags & (g.GNTMAP_device_map | g.GNTMAP_application_map | g.GNTMAP_contains_pte):
            op.status = S.general_error  # no device or PTE mappings for a translated guest
        else:
            granter = me.hv.domains.get(int(op.dom))  # by id: DOMID_SELF names nobody
            if granter is None:
                op.status = S.bad_domain
            else:
                op.status, handle = guest_map(me, granter, int(op.ref), int(op.host_addr),
                                              flags)
                if op.status == S.okay:
                    op.handle = handle
                    op.dev_bus_addr = 0
        call.guest.write_struct(addr, op)
    return 0


def _unmap(call: Call, uop: int, count: int) -> int:
    size = ctypes.sizeof(g.gnttab_unmap_grant_ref)
    for i in range(count):
        _preempt(call, GnttabOp.unmap_grant_ref, uop, count, i, size)
        addr = uop + i * size
        op = call.guest.read_struct(addr, g.gnttab_unmap_grant_ref)
        status = guest_unmap(call.domain, int(op.handle), int(op.host_addr),
                             int(op.dev_bus_addr))
        _write_status(call, addr + g.gnttab_unmap_grant_ref.status.offset, status)
    return 0


def _copy(call: Call, uop: int, count: int) -> int:
    ctype: type[ctypes.Structure] = g.compat_gnttab_copy if call.compat else g.gnttab_copy
    size = ctypes.sizeof(ctype)
    status_offset = ctype.status.offset
    for i in range(count):
        _preempt(call, GnttabOp.copy, uop, count, i, size)
        addr = uop + i * size
        op = call.guest.read_struct(addr, ctype)
        _write_status(call, addr + status_offset, _copy_one(call, op))
    return 0


def _copy_domain(me: Domain, domid: int, by_ref: bool) -> Domain:
    """gnttab_copy_lock_domain: a frame number only with DOMID_SELF; the domain must exist."""
    if domid != DOMID_SELF and not by_ref:
        raise GrantError(S.permission_denied, "frame numbers only with DOMID_SELF")
    if domid == DOMID_SELF:
        return me
    d = me.hv.domains.get(domid)
    if d is None:
        raise GrantError(S.bad_domain, f"no domain {domid}")
    return d


def _claim(me: Domain, d: Domain, ptr: ctypes.Structure, by_ref: bool,
           readonly: bool) -> Acquired:
    if by_ref:
        return d.grants.acquire(int(ptr.u.ref), me.domid, readonly, for_map=False)
    return me.grants.acquire_frame(int(ptr.u.gmfn), readonly)


def _copy_one(call: Call, op: ctypes.Structure) -> int:
    """One GNTTABOP_copy element, checked in Xen's order; its GNTST status."""
    me = call.domain
    src_ref = bool(op.flags & g.GNTCOPY_source_gref)
    dst_ref = bool(op.flags & g.GNTCOPY_dest_gref)
    src: Acquired | None = None
    dst: Acquired | None = None
    try:
        src_dom = _copy_domain(me, int(op.source.domid), src_ref)
        dst_dom = _copy_domain(me, int(op.dest.domid), dst_ref)
        src = _claim(me, src_dom, op.source, src_ref, readonly=True)
        dst = _claim(me, dst_dom, op.dest, dst_ref, readonly=False)
        length = int(op.len)
        soff, doff = int(op.source.offset), int(op.dest.offset)
        if soff + length > PAGE_SIZE or doff + length > PAGE_SIZE:
            return S.bad_copy_arg
        if soff < src.start or soff + length > src.start + src.length:
            return S.general_error  # outside the granted sub-page
        if doff < dst.start or doff + length > dst.start + dst.length:
            return S.general_error
        if length:
            s = src.pool_page * PAGE_SIZE + soff
            t = dst.pool_page * PAGE_SIZE + doff
            dst.memory.pool[t : t + length] = src.memory.pool[s : s + length]
        return S.okay
    except GrantError as e:
        return e.status
    finally:
        if dst is not None:
            dst.table.release(dst)
        if src is not None:
            src.table.release(src)


_HANDLERS: dict[int, Handler] = {
    GnttabOp.setup_table: _setup_table,
    GnttabOp.query_size: _query_size,
    GnttabOp.set_version: _set_version,
    GnttabOp.get_version: _get_version,
    GnttabOp.copy: _copy,
    GnttabOp.map_grant_ref: _map,
    GnttabOp.unmap_grant_ref: _unmap,
    GnttabOp.swap_grant_ref: _swap,
}
assert set(_HANDLERS) == HVM_OPS
