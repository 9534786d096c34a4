"""Control operations that map guest pages into a client: grant_map, foreign_map.

What Xen's dom0 gets from gntdev (a granted page) and privcmd (a foreign
frame).  The reply carries one file descriptor: the page's own one-page
memfd (``hv.page_export``), to mmap at offset 0 -- never the guest's memory
file.  A read-only mapping's file is sealed so that the kernel refuses a
writable mapping of it, however the client reopens it.  ``grant_unmap`` /
``foreign_unmap`` (or the connection's end) give the page back, and the
client's mapping stops being the guest's page.

Checks: ``grant_map`` is the grant check of ``hv.grant_table.map_grant``
(granted to domain 0, read-only grants mapped read-only ...).
``foreign_map`` is privileged: the toolstack may map any frame backed by
the domain's own memory; a service only the frames it serves, the
console and xenstore rings (HVM_PARAM_CONSOLE_PFN / STORE_PFN).  A frame
holding another domain's page (a grant mapping in the guest's p2m) is
refused with EINVAL, as Xen's p2m_add_foreign refuses a p2m entry that is
not RAM; a hole is EFAULT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyxen.abi.hvm import HvmParam
from pyxen.abi.xen import DOMID_FIRST_RESERVED
from pyxen.control.protocol import ControlError
from pyxen.control.session import PageMapping, Role, Session, WithFds, mapping_limit
from pyxen.hv.grant_table import GrantError, map_grant, unmap_grant
from pyxen.hv.page_export import ExportError
from pyxen.memory import Gfn, PageKind

if TYPE_CHECKING:
    from pyxen.control.server import ControlServer
    from pyxen.hv.domain import Domain

# The frames a service may foreign-map: the rings it serves.
SERVICE_FRAMES = (HvmParam.CONSOLE_PFN, HvmParam.STORE_PFN)


def guest_domain(server: ControlServer, args: dict[str, Any]) -> Domain:
    value = args.get("domid")
    if (not isinstance(value, int) or isinstance(value, bool)
            or not 0 < value < DOMID_FIRST_RESERVED):
        raise ControlError("EINVAL", "'domid' must be a guest's domain id "
                           f"(1 to {DOMID_FIRST_RESERVED - 1})")
    return server.manager.get(value).domain


def _readonly(args: dict[str, Any]) -> bool:
    value = args.get("readonly", False)
    if not isinstance(value, bool):
        raise ControlError("EINVAL", "'readonly' must be true or false")
    return value


def _room(session: Session) -> None:
    limit = mapping_limit(session.role)
    if len(session.mappings) >= limit:
        raise ControlError("ENOSPC", f"this connection already has {limit} pages mapped")


def _mapped(session: Session, mapping: PageMapping, readonly: bool) -> WithFds:
    handle = session.add_mapping(mapping)
    return WithFds({"handle": handle, "readonly": readonly}, [mapping.export.fd])


def grant_map(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Map a page a guest granted to domain 0 (the grant stays in use until grant_unmap)."""
    ref = args.get("ref")
    if not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref < 1 << 32:
        raise ControlError("EINVAL", "'ref' must be a grant reference")
    readonly = _readonly(args)
    domain = guest_domain(server, args)
    _room(session)
    try:
        grant = map_grant(domain, ref, 0, readonly)
    except GrantError as e:
        raise ControlError("EPERM", f"grant {ref} of domain {domain.domid}: {e}") from None
    try:
        export = domain.grants.exports.acquire(grant.pool_page, readonly)
    except ExportError as e:
        unmap_grant(grant)
        raise ControlError(e.code, f"grant {ref} of domain {domain.domid}: {e}") from None
    return _mapped(session, PageMapping(domain, export, grant), readonly)


def foreign_map(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """A privileged mapping of one guest frame (see the module docstring for who may)."""
    gfn = args.get("gfn")
    if not isinstance(gfn, int) or isinstance(gfn, bool) or gfn < 0:
        raise ControlError("EINVAL", "'gfn' must be a guest frame number")
    readonly = _readonly(args)
    domain = guest_domain(server, args)
    if session.role is Role.SERVICE and gfn not in {domain.params[p] for p in SERVICE_FRAMES}:
        raise ControlError("EPERM", f"a service may map only a domain's console and "
                                    f"xenstore frames, not frame {gfn:#x}")
    _room(session)
    with domain.lock:
        found = domain.memory.lookup(Gfn(gfn)) if gfn < domain.max_gfn else None
        if found is None:
            raise ControlError("EFAULT", f"frame {gfn:#x} of domain {domain.domid} is not "
                                         "populated")
        page, kind = found
        if kind is PageKind.FOREIGN:
            raise ControlError("EINVAL", f"frame {gfn:#x} of domain {domain.domid} holds "
                                         "another domain's page (a grant mapping)")
        domain.grants.hold_page(page)  # the page stays the domain's while mapped
    try:
        export = domain.grants.exports.acquire(page, readonly)
    except ExportError as e:
        domain.grants.release_page(page)
        raise ControlError(e.code, f"frame {gfn:#x} of domain {domain.domid}: {e}") from None
    return _mapped(session, PageMapping(domain, export, None), readonly)


def _unmap(session: Session, args: dict[str, Any], want_grant: bool) -> Any:
    handle = args.get("handle")
    if not isinstance(handle, int):
        raise ControlError("EINVAL", "'handle' must be a mapping handle")
    mapping = session.mappings.get(handle)
    if (mapping is None or (mapping.grant is not None) != want_grant
            or args.get("domid", mapping.domain.domid) != mapping.domain.domid):
        kind = "grant" if want_grant else "foreign"
        raise ControlError("EINVAL", f"no such {kind} mapping on this connection")
    del session.mappings[handle]
    release(mapping)
    return None


def grant_unmap(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    return _unmap(session, args, want_grant=True)


def foreign_unmap(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    return _unmap(session, args, want_grant=False)


def release(mapping: PageMapping) -> None:
    """Give a mapped page back: first out of its file, then the pin."""
    domain = mapping.domain
    domain.grants.exports.release(mapping.export)
    if mapping.grant is not None:
        unmap_grant(mapping.grant)
    else:
        domain.grants.release_page(mapping.export.pool_page)
