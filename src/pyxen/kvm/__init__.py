"""KVM, bound in three layers: structures (``structs``), ioctl numbers
(``ioctls``), and one wrapper per kind of fd (``System``, ``Vm``, ``Vcpu``).
Exits are decoded once into typed values (``exits``).
"""

from pyxen.kvm.errors import KvmError, KvmUnavailable
from pyxen.kvm.system import System
from pyxen.kvm.vcpu import Vcpu
from pyxen.kvm.vm import Vm

__all__ = ["KvmError", "KvmUnavailable", "System", "Vcpu", "Vm"]
