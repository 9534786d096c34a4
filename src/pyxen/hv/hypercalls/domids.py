"""Resolving the domid argument of a hypercall (Xen's rcu_lock_domain_by_any_id + XSM).

An unprivileged caller may name only itself (DOMID_SELF or its own id).
Naming another domain that exists (domain 0, the control domain, always
does) is -EPERM; naming one that does not exist is -ESRCH.
"""

from __future__ import annotations

from pyxen.abi.errno import XenErrno
from pyxen.abi.xen import DOMID_SELF
from pyxen.hv.dispatch import Call
from pyxen.hv.domain import Domain
from pyxen.hv.errors import HypercallError


def target_domain(call: Call, domid: int) -> Domain:
    """The domain ``domid`` names, if the caller may act on it."""
    domid &= 0xFFFF
    me = call.domain
    if domid in (DOMID_SELF, me.domid):
        return me
    if not call.domain.hv.domain_exists(domid):
        raise HypercallError(XenErrno.ESRCH)
    target = call.domain.hv.domains.get(domid)
    if me.privileged and target is not None:
        return target
    raise HypercallError(XenErrno.EPERM)
