"""HVMOP_altp2m (hvm_op 25): the guest's and the control domain's door to altp2m views.

Checks in Xen 4.12's order (hvm.c do_altp2m_op): the 80-byte argument
(-EFAULT), pads and interface version (-EINVAL), a known command
(-EOPNOTSUPP), the domain (-ESRCH; vcpu_enable_notify is always the
caller's own), altp2m active for everything but the domain state
(-EOPNOTSUPP), HVM_PARAM_ALTP2M not disabled (-EINVAL), then the XSM
default policy per mode (-EPERM): *mixed* lets the domain itself and a
privileged domain in, *external* and *limited* only a privileged domain
(limited lets the guest enable its #VE notification).

The views themselves are hv/altp2m.py's.  #VE needs VMX virtualisation
exceptions, which KVM does not offer (docs/design/vmi-feasibility.md Q8):
vcpu_enable_notify answers -EOPNOTSUPP after Xen's own argument checks;
suppress_ve bits are recorded and read back but change nothing.
set_mem_access_multi is preemptible like Xen's: ``opaque`` counts the
entries done, written back before the hypercall is continued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyxen.abi.errno import XenErrno
from pyxen.abi.hvm import (
    ALTP2M_OP_U_OFFSET,
    HVMOP_ALTP2M_INTERFACE_VERSION,
    Altp2mCmd,
    HvmOp,
    XEN_ALTP2M_disabled,
    XEN_ALTP2M_limited,
    XEN_ALTP2M_mixed,
    compat_xen_hvm_altp2m_set_mem_access_multi,
    xen_hvm_altp2m_change_gfn,
    xen_hvm_altp2m_domain_state,
    xen_hvm_altp2m_mem_access,
    xen_hvm_altp2m_op,
    xen_hvm_altp2m_set_mem_access_multi,
    xen_hvm_altp2m_suppress_ve,
    xen_hvm_altp2m_vcpu_disable_notify,
    xen_hvm_altp2m_vcpu_enable_notify,
    xen_hvm_altp2m_view,
)
from pyxen.abi.hvm import HvmParam as P
from pyxen.abi.xen import DOMID_SELF
from pyxen.hv.dispatch import Call, Continuation
from pyxen.hv.errors import HypercallError

if TYPE_CHECKING:
    from pyxen.hv.altp2m import Altp2m

MULTI_BATCH = 256  # set_mem_access_multi entries between preemption checks


def do_altp2m_op(call: Call, arg: int) -> int:
    a = call.guest.read_struct(arg, xen_hvm_altp2m_op)
    if a.pad1 or a.pad2 or a.version != HVMOP_ALTP2M_INTERFACE_VERSION:
        raise HypercallError(XenErrno.EINVAL)
    try:
        cmd = Altp2mCmd(a.cmd)
    except ValueError:
        raise HypercallError(XenErrno.EOPNOTSUPP) from None
    me = call.domain
    domid = int(a.domain)
    if cmd is Altp2mCmd.vcpu_enable_notify or domid in (DOMID_SELF, me.domid):
        d = me
    else:
        found = me.hv.domains.get(domid)
        if found is None:
            raise HypercallError(XenErrno.ESRCH)
        d = found
    views = d.altp2m
    if cmd not in (Altp2mCmd.get_domain_state, Altp2mCmd.set_domain_state) and not views.active:
        raise HypercallError(XenErrno.EOPNOTSUPP)
    mode = d.params[P.ALTP2M]
    if mode == XEN_ALTP2M_disabled:
        raise HypercallError(XenErrno.EINVAL)
    # XSM's default policy: mixed lets the guest make every call on itself, limited
    # only vcpu_enable_notify, external none.
    if not (me.privileged or (d is me and (
            mode == XEN_ALTP2M_mixed
            or (mode == XEN_ALTP2M_limited and cmd is Altp2mCmd.vcpu_enable_notify)))):
        raise HypercallError(XenErrno.EPERM)
    u = arg + ALTP2M_OP_U_OFFSET
    guest = call.guest
    if cmd is Altp2mCmd.get_domain_state:
        guest.write_struct(u, xen_hvm_altp2m_domain_state(int(views.active)))
    elif cmd is Altp2mCmd.set_domain_state:
        views.set_state(bool(guest.read_struct(u, xen_hvm_altp2m_domain_state).state))
    elif cmd is Altp2mCmd.vcpu_enable_notify:
        n = guest.read_struct(u, xen_hvm_altp2m_vcpu_enable_notify)
        if n.pad or a.domain != DOMID_SELF or n.vcpu_id != call.vcpu.vcpu_id:
            raise HypercallError(XenErrno.EINVAL)
        raise HypercallError(XenErrno.EOPNOTSUPP)  # no #VE under KVM
    elif cmd is Altp2mCmd.vcpu_disable_notify:
        if guest.read_struct(u, xen_hvm_altp2m_vcpu_disable_notify).vcpu_id >= len(d.vcpus):
            raise HypercallError(XenErrno.EINVAL)
    elif cmd is Altp2mCmd.create_p2m:
        v = guest.read_struct(u, xen_hvm_altp2m_view)
        v.view = views.create_view()
        guest.write_struct(u, v)
    elif cmd is Altp2mCmd.destroy_p2m:
        views.destroy_view(int(guest.read_struct(u, xen_hvm_altp2m_view).view))
    elif cmd is Altp2mCmd.switch_p2m:
        views.switch_view(int(guest.read_struct(u, xen_hvm_altp2m_view).view))
    elif cmd is Altp2mCmd.set_mem_access:
        m = guest.read_struct(u, xen_hvm_altp2m_mem_access)
        if m.pad:
            raise HypercallError(XenErrno.EINVAL)
        views.set_mem_access(int(m.view), int(m.gfn), int(m.access))
    elif cmd is Altp2mCmd.get_mem_access:
        m = guest.read_struct(u, xen_hvm_altp2m_mem_access)
        if m.pad:
            raise HypercallError(XenErrno.EINVAL)
        m.access = views.get_mem_access(int(m.view), int(m.gfn))
        guest.write_struct(u, m)
    elif cmd is Altp2mCmd.change_gfn:
        c = guest.read_struct(u, xen_hvm_altp2m_change_gfn)
        if c.pad1 or c.pad2:
            raise HypercallError(XenErrno.EINVAL)
        views.change_gfn(int(c.view), int(c.old_gfn), int(c.new_gfn))
    elif cmd is Altp2mCmd.set_mem_access_multi:
        _set_mem_access_multi(call, arg, u, views)
    else:
        s = guest.read_struct(u, xen_hvm_altp2m_suppress_ve)
        if s.pad1 or s.pad2:
            raise HypercallError(XenErrno.EINVAL)
        if cmd is Altp2mCmd.set_suppress_ve:
            views.set_suppress_ve(int(s.view), int(s.gfn), bool(s.suppress_ve))
        else:
            s.suppress_ve = int(views.get_suppress_ve(int(s.view), int(s.gfn)))
            guest.write_struct(u, s)
    return 0


def _set_mem_access_multi(call: Call, arg: int, u: int, views: Altp2m) -> None:
    guest = call.guest
    m = guest.read_struct(u, xen_hvm_altp2m_set_mem_access_multi)
    if m.pad or m.opaque > m.nr:
        raise HypercallError(XenErrno.EINVAL)
    if call.compat:  # 4-byte handles after opaque
        c = guest.read_struct(u, compat_xen_hvm_altp2m_set_mem_access_multi)
        pfns, accesses = int(c.pfn_list), int(c.access_list)
    else:
        pfns, accesses = int(m.pfn_list), int(m.access_list)
    done, nr = int(m.opaque), int(m.nr)
    while done < nr:
        batch = min(nr - done, MULTI_BATCH)
        entries = [(guest.read_u64(pfns + 8 * (done + i)), guest.read(accesses + done + i, 1)[0])
                   for i in range(batch)]
        views.set_mem_access_multi(int(m.view), entries)
        done += batch
        if done < nr and call.preempted():
            m.opaque = done
            guest.write_struct(u, m)
            raise Continuation(HvmOp.altp2m, arg)
