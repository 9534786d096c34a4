# Type stub of the C extension built from _runloop.c (see pyxen.kvm.vcpu).
from collections.abc import Callable

def run_once(fd: int, run_addr: int, port: int,
             serve: Callable[[int, bool, int, int, int, int, int, int], int], /) -> bool: ...
