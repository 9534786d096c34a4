"""Virtual machine introspection of a domain in this process (issue 16, first slice).

LibVMI-shaped: ``Vmi(domain)`` pauses and resumes, reads and writes guest
physical and virtual memory (through the guest's page tables), gets and
sets vCPU registers, and delivers single-step and hardware-breakpoint
events to Python callbacks.  See docs/features/vmi.md and vmi/core.py.
"""

from __future__ import annotations

from pyxen.vmi.core import Vmi, VmiError
from pyxen.vmi.events import Event, EventInfo, EventKind, EventResponse

__all__ = ["Event", "EventInfo", "EventKind", "EventResponse", "Vmi", "VmiError"]
