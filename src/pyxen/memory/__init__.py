"""Guest memory: typed addresses, the memfd-backed pool and p2m of a domain,
the page-table walker and copies to and from guest linear addresses."""

from pyxen.memory.access import GuestAccess
from pyxen.memory.addr import PAGE_SHIFT, PAGE_SIZE, Gfn, Gla, Gpa
from pyxen.memory.errors import GuestFault, MemoryFault, PageFault, SlotsExhausted
from pyxen.memory.paging import PagingState, translate
from pyxen.memory.physmap import GuestMemory, PageKind

__all__ = [
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "Gfn",
    "Gla",
    "Gpa",
    "GuestAccess",
    "GuestFault",
    "GuestMemory",
    "MemoryFault",
    "PageFault",
    "PageKind",
    "PagingState",
    "SlotsExhausted",
    "translate",
]
