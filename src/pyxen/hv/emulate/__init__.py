"""User-space fallback for instructions KVM cannot emulate (see ``fallback``)."""

from pyxen.hv.emulate.fallback import handle_emulation_failure

__all__ = ["handle_emulation_failure"]
