"""pyxen: a Xen-compatible hypervisor written in Python on Linux KVM.

Layers, from the bottom (imports point down only): ``kvm`` (ioctls and
structures), ``memory`` (guest RAM and address translation), ``abi`` (Xen
public headers as ctypes), ``boot`` (ELF, PVH start info, e820), ``hv`` (the
hypervisor: domains, vCPUs, hypercalls) and ``toolstack`` (the ``pyxen``
command).
"""

__version__ = "0.1.0"
