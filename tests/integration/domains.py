"""Running several domains in one hypervisor from a test, through the Python API.

``Host`` wraps a ``Hypervisor`` whose console writes into memory, builds
domains from the test guests and waits for them.  It is what the toolstack
daemon will do for users (issue "control plane"); tests need it now to put
two domains side by side and to hand them event-channel ports.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from pyxen.hv.argo.config import ArgoConfig
from pyxen.hv.builder import BuildSpec, build_domain
from pyxen.hv.domain import Domain
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.vcpu import install_kick_handler

GUEST_BUILD = Path(__file__).resolve().parents[2] / "guests" / "build"
RESULT_RE = re.compile(r"^\(d(\d+)\) RESULT (\S+): (PASS|FAIL)\b.*$", re.MULTILINE)


class Host:
    def __init__(self, argo: ArgoConfig | None = None) -> None:
        install_kick_handler()
        self.out = io.StringIO()
        self.log = io.StringIO()
        self.hv = Hypervisor(self.out, self.log, argo=argo)

    def build(self, prog: str, cmdline: str = "", vcpus: int = 1, memory: int = 16,
              domid: int | None = None, altp2m: int = 0) -> Domain:
        spec = BuildSpec(name=f"{prog}-{domid or 'x'}", kernel=GUEST_BUILD / f"{prog}.elf",
                         cmdline=cmdline, memory_mib=memory, maxmem_mib=memory,
                         vcpus=vcpus, maxvcpus=vcpus, domid=domid, altp2m=altp2m)
        return build_domain(self.hv, spec)

    def wait_all(self, domains: list[Domain], timeout: float = 120) -> list[int | None]:
        """Wait for every domain to shut down (or the timeout); return the reasons."""
        end = time.monotonic() + timeout
        for d in domains:
            d.wait(max(end - time.monotonic(), 0))
        return [d.shutdown_reason for d in domains]

    def output(self) -> str:
        return self.out.getvalue()

    def describe(self) -> str:
        return f"--- guests ---\n{self.out.getvalue()}\n--- hypervisor ---\n{self.log.getvalue()}"

    def result(self, domid: int, prog: str) -> str | None:
        """PASS or FAIL from the domain's RESULT line (None if it printed none)."""
        for m in RESULT_RE.finditer(self.output()):
            if int(m.group(1)) == domid and m.group(2) == prog:
                return m.group(3)
        return None

    def close(self) -> None:
        self.hv.close()
