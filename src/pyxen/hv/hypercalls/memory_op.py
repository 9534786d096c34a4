"""memory_op (hypercall 12) for translated (HVM/PVH) guests (§7.5).

Reservation ops (increase/decrease_reservation, populate_physmap) return
the number of extents done; any argument problem or failure stops the loop
and returns the count so far, never -errno (Xen's semantics).  The cmd's
bits 63:6 are the extent to start from (a continuation index); Xen refuses
more than UINT_MAX >> 6 extents, the most a continuation can encode in a
32-bit caller's cmd.

Continuations (dispatch.Continuation, Xen 4.12's do_memory_op): a
reservation stops at a preemption point between two extents and is
restarted as ``memory_op(op | done << MEMOP_EXTENT_SHIFT, arg)``;
add_to_physmap of a gmfn_range likewise with the pages done (-EDOM for a
start beyond the 16-bit size, -EILSEQ beyond ``size``).  The domain lock is
taken per extent, so a pause or a destroy never waits for a whole batch.
The ops that take no continuation refuse start bits: -EINVAL for the
common ones (maximum_ram_page, the reservation queries, maximum_gpfn,
remove_from_physmap, exchange), -ENOSYS for the x86 ones, whose switch
compares the whole cmd.

Everything else returns 0 or -errno.  add_to_physmap maps hypervisor pages
(shared_info, grant frames, v2 grant status frames) or moves RAM, at any
frame the guest chooses below its physical-address limit.  Mapping grant
frame ``idx`` grows the grant table to ``idx + 1`` frames (up to
max_grant_frames, else -EINVAL); a status frame (``idx |
XENMAPIDX_grant_table_status``) exists only with grant table version 2
(else -EINVAL, as the bit makes the index too large for a shared frame).
A frame holding a grant mapping of another domain's page cannot be
replaced: -ENXIO (Xen's guest_remove_page refuses a page it does not own).

When the p2m cannot take a change (its KVM memory slot budget, see
memory/physmap.py: a guest that fragments its RAM, e.g. ballooning every
other page), the op fails as Xen 4.12's does when its p2m cannot allocate a
page-table page (p2m_set_entry: -ENOMEM): decrease_reservation and
populate_physmap stop and return the extents done so far (Xen's
guest_remove_page failure ends the loop; for populate_physmap Xen 4.12
ignored guest_physmap_add_page's error and left the page allocated but
unmapped, later Xen stops with the count done, which pyxen does, giving the
page back), add_to_physmap and remove_from_physmap return -ENOMEM.  Nothing
of the failing extent's last page has changed, and the domain goes on.
"""

from __future__ import annotations

import ctypes
import os

from pyxen.abi import memory as m
from pyxen.abi.errno import XenErrno
from pyxen.abi.memory import XenMapSpace, XenMem
from pyxen.boot import BootError
from pyxen.boot.e820 import E820Entry, pack_xen
from pyxen.hv.dispatch import Call, Continuation, report_missing_subop
from pyxen.hv.domain import (
    DOMU_MAX_ORDER,
    GRANT_FRAME_HEAP_BASE,
    SHARED_INFO_HEAP_INDEX,
    Domain,
    FrameInUse,
)
from pyxen.hv.errors import HypercallError
from pyxen.hv.hypercalls.domids import target_domain
from pyxen.memory import GuestFault, SlotsExhausted

# XENMEM_maximum_ram_page: the host's highest page frame (+1).
HOST_MAX_PAGE = os.sysconf("SC_PHYS_PAGES")


# Xen refuses reservations too large to continue in a 32-bit cmd (UINT_MAX >> 6).
MAX_EXTENTS = 0xFFFF_FFFF >> m.MEMOP_EXTENT_SHIFT
# Ops of common/memory.c that take no continuation: start bits are -EINVAL.
_NO_START = frozenset({XenMem.maximum_ram_page, XenMem.current_reservation,
                       XenMem.maximum_reservation, XenMem.maximum_gpfn,
                       XenMem.remove_from_physmap, XenMem.exchange})


def do_memory_op(call: Call, cmd: int, arg: int, *_: int) -> int:
    op = cmd & m.MEMOP_CMD_MASK
    start = (cmd & call.ulong_mask) >> m.MEMOP_EXTENT_SHIFT
    if op in (XenMem.increase_reservation, XenMem.decrease_reservation,
              XenMem.populate_physmap):
        return _reservation(call, op, arg, start)
    if op == XenMem.add_to_physmap:
        return _add_to_physmap(call, arg, start)
    if start:
        return -XenErrno.EINVAL if op in _NO_START else -XenErrno.ENOSYS
    if op == XenMem.maximum_ram_page:
        return int(HOST_MAX_PAGE)
    if op in (XenMem.current_reservation, XenMem.maximum_reservation, XenMem.maximum_gpfn):
        domid = call.guest.read_u16(arg)
        d = target_domain(call, domid)
        if op == XenMem.current_reservation:
            with d.lock:
                d.reap_freed()
                return d.tot_pages
        if op == XenMem.maximum_reservation:
            return d.max_pages
        return max((e.end for e in d.memory.extents()), default=1) - 1
    if op == XenMem.memory_map:
        return _memory_map(call, arg)
    if op == XenMem.set_memory_map:
        return _set_memory_map(call, arg)
    if op == XenMem.remove_from_physmap:
        return _remove_from_physmap(call, arg)
    if op in (XenMem.machine_memory_map, XenMem.machphys_mapping, XenMem.machphys_mfn_list,
              XenMem.machphys_compat_mfn_list, XenMem.exchange):
        return -XenErrno.ENOSYS
    try:
        name = XenMem(op).name
    except ValueError:
        return -XenErrno.ENOSYS
    return report_missing_subop(call, "memory_op", op, name)


def _reservation(call: Call, op: int, arg: int, start: int) -> int:
    res_type = m.compat_xen_memory_reservation if call.compat else m.xen_memory_reservation
    try:
        res = call.guest.read_struct(arg, res_type)
    except GuestFault:
        return start
    nr = int(res.nr_extents)
    if nr > MAX_EXTENTS or start >= nr:
        return start
    order = int(res.extent_order)
    if order > DOMU_MAX_ORDER:
        return start
    try:
        d = target_domain(call, res.domid)
    except HypercallError:
        return start
    word = 4 if call.compat else 8
    pages = 1 << order
    done = start
    while done < nr:
        if done != start and call.preempted():
            raise Continuation(op | done << m.MEMOP_EXTENT_SHIFT, arg)
        if op == XenMem.increase_reservation:
            with d.lock:
                if not d.reserve_pages(pages):
                    break
            done += 1
            continue
        try:
            gfn = call.guest.read(res.extent_start + done * word, word)
        except GuestFault:
            break
        first = int.from_bytes(gfn, "little")
        if first & (pages - 1) or first + pages > d.max_gfn:
            break
        with d.lock:
            try:
                if op == XenMem.populate_physmap:
                    ok = all(d.populate_page(first + i) for i in range(pages))
                else:
                    ok = all(d.remove_page(first + i) for i in range(pages))
            except SlotsExhausted as e:
                ok = _p2m_full(d, e)
        if not ok:
            break
        done += 1
    return done


def _memory_map(call: Call, arg: int) -> int:
    map_type = m.compat_xen_memory_map if call.compat else m.xen_memory_map
    fmap = call.guest.read_struct(arg, map_type)
    entries = call.domain.e820
    if not entries:
        return -XenErrno.ENOSYS
    n = min(int(fmap.nr_entries), len(entries))
    call.guest.write(fmap.buffer, pack_xen(entries[:n]))
    fmap.nr_entries = n
    call.guest.write_struct(arg, fmap)
    return 0


# Xen keeps at most E820MAX (128) entries per domain.
E820_MAX = 128


def _set_memory_map(call: Call, arg: int) -> int:
    """XENMEM_set_memory_map: XSM_TARGET, so a domain may replace its own map."""
    fmap_type = m.compat_xen_foreign_memory_map if call.compat else m.xen_foreign_memory_map
    fmap = call.guest.read_struct(arg, fmap_type)
    d = target_domain(call, fmap.domid)
    count = int(fmap.map.nr_entries)
    if count > E820_MAX:
        raise HypercallError(XenErrno.EINVAL)
    records = (m.e820entry * count).from_buffer_copy(
        call.guest.read(fmap.map.buffer, count * ctypes.sizeof(m.e820entry)))
    entries = []
    for record in records:
        try:
            entries.append(E820Entry(record.addr, record.size, m.E820Type(record.type)))
        except (ValueError, BootError):
            raise HypercallError(XenErrno.EINVAL) from None
    d.e820 = entries
    return 0


def _add_to_physmap(call: Call, arg: int, start: int) -> int:
    if start > 0xFFFF:  # more than xatp.size can count: malicious or buggy
        return -XenErrno.EDOM
    xatp_type = m.compat_xen_add_to_physmap if call.compat else m.xen_add_to_physmap
    xatp = call.guest.read_struct(arg, xatp_type)
    if xatp.space == XenMapSpace.gmfn_foreign:
        return -XenErrno.ENOSYS
    d = target_domain(call, xatp.domid)
    idx, gpfn = int(xatp.idx), int(xatp.gpfn)
    try:
        if xatp.space != XenMapSpace.gmfn_range:
            with d.lock:
                _map_one(d, xatp.space, idx, gpfn)
            return 0
        size = int(xatp.size)
        if size < start:
            return -XenErrno.EILSEQ
        for i in range(start, size):
            if i != start and call.preempted():
                raise Continuation(XenMem.add_to_physmap | i << m.MEMOP_EXTENT_SHIFT, arg)
            with d.lock:
                _map_one(d, XenMapSpace.gmfn, idx + i, gpfn + i)
    except FrameInUse:
        return -XenErrno.ENXIO
    except SlotsExhausted as e:
        _p2m_full(d, e)
        return -XenErrno.ENOMEM
    return 0


def _p2m_full(d: Domain, e: SlotsExhausted) -> bool:
    """The p2m cannot take a change: the op fails as Xen's does when its p2m
    cannot allocate a page-table page (the caller's answer: the extents done so
    far, or -ENOMEM).  The domain goes on.  Returns False (not done)."""
    d.log_once("p2m-slots", f"memory_op: {e}: the guest's p2m is too fragmented; "
               "the operation fails as Xen's does when its p2m cannot grow")
    return False


def _map_one(d: Domain, space: int, idx: int, gpfn: int) -> None:
    if gpfn >= d.max_gfn:
        raise HypercallError(XenErrno.EINVAL, "gpfn beyond the guest physical address width")
    if space == XenMapSpace.shared_info:
        if idx != 0:
            raise HypercallError(XenErrno.EINVAL)
        d.map_heap_page(SHARED_INFO_HEAP_INDEX, gpfn)
    elif space == XenMapSpace.grant_table:
        status = m.XENMAPIDX_grant_table_status
        if idx & status and d.grants.version == 2:
            if not d.grants.ensure_status_frame(idx & ~status):
                raise HypercallError(XenErrno.EINVAL)
            d.map_heap_page(d.grant_status_heap_base + (idx & ~status), gpfn)
        else:
            if not d.grants.ensure_frame(idx):
                raise HypercallError(XenErrno.EINVAL)
            d.map_heap_page(GRANT_FRAME_HEAP_BASE + idx, gpfn)
    elif space == XenMapSpace.gmfn:
        if not d.move_page(idx, gpfn):
            raise HypercallError(XenErrno.EINVAL)
    else:
        raise HypercallError(XenErrno.EINVAL)


def _remove_from_physmap(call: Call, arg: int) -> int:
    xrfp_type = m.compat_xen_remove_from_physmap if call.compat else m.xen_remove_from_physmap
    xrfp = call.guest.read_struct(arg, xrfp_type)
    d = target_domain(call, xrfp.domid)
    with d.lock:
        try:
            if not d.remove_page(int(xrfp.gpfn)):
                raise HypercallError(XenErrno.ENOENT)
        except SlotsExhausted as e:
            _p2m_full(d, e)
            return -XenErrno.ENOMEM
    return 0

