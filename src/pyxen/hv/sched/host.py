"""The host side of scheduling: which CPUs the hypervisor may use and how they are laid out.

``parse_cpu_list("0-3,6")`` reads the ``--cpus`` syntax (Linux's cpulist);
``host_topology(pcpus)`` reads cores, sockets and NUMA nodes from sysfs
(each pCPU its own core on socket 0 / node 0 where sysfs says nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyxen.cpulist import parse_cpu_list
from pyxen.hv.sched.interface import Topology

__all__ = ["host_topology", "parse_cpu_list"]

SYSFS_CPU = Path("/sys/devices/system/cpu")
SYSFS_NODE = Path("/sys/devices/system/node")


def _read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return default


def host_topology(pcpus: Sequence[int]) -> Topology:
    node_of: dict[int, int] = {}
    if SYSFS_NODE.is_dir():
        for node_dir in SYSFS_NODE.glob("node[0-9]*"):
            node = int(node_dir.name[4:])
            for cpu_link in node_dir.glob("cpu[0-9]*"):
                node_of[int(cpu_link.name[3:])] = node
    core_of, socket_of = {}, {}
    for p in pcpus:
        topo = SYSFS_CPU / f"cpu{p}" / "topology"
        socket = _read_int(topo / "physical_package_id", 0)
        socket_of[p] = socket
        core_of[p] = socket * 4096 + _read_int(topo / "core_id", p)
    return Topology(core_of, socket_of, {p: node_of.get(p, 0) for p in pcpus})
