"""The toolstack as a Python library: what the ``pyxen`` command does, callable.

Talks to a running hypervisor daemon (``pyxen hypervisor --daemon``) found
the same way as the commands (``run_dir`` argument, else ``PYXEN_RUN_DIR``,
else /run/pyxen)::

    from pyxen.toolstack.api import Domain, Toolstack

    ts = Toolstack()
    dom = Domain.create("examples/hello.cfg", toolstack=ts)
    dom.pause(); dom.unpause()
    print(dom.info()["current_memkb"])
    with dom.console() as con:        # a socket: bytes both ways
        con.sendall(b"input\\n")
    dom.shutdown(wait=True)

Errors are ``ControlError`` (``.code`` is an errno name such as ESRCH),
``NoDaemon`` when no hypervisor answers, ``XlCfgError`` for a bad config.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyxen.control.client import ControlClient
from pyxen.control.paths import InstancePaths
from pyxen.toolstack.commands import config_request, open_console
from pyxen.toolstack.domain_config import DomainConfig
from pyxen.toolstack.xlcfg import apply_overrides, read_xl_cfg

CONSOLE_WAIT = 10.0


class Toolstack:
    """A connection to one hypervisor instance."""

    def __init__(self, run_dir: str | Path | None = None) -> None:
        self.paths = InstancePaths.resolve(str(run_dir) if run_dir else None)
        self.client = ControlClient.connect(self.paths)

    def domains(self) -> list[Domain]:
        """Every domain but Domain-0 (the hypervisor process)."""
        return [Domain(self, info["domid"]) for info in self.client.call("list")
                if info["domid"] != 0]

    def lookup(self, name: str) -> Domain:
        return Domain(self, int(self.client.call("lookup", name=name)["domid"]))

    def info(self) -> dict[str, Any]:
        """Host and hypervisor information (``pyxen info``)."""
        result: dict[str, Any] = self.client.call("info")
        return result

    def scheduler(self, pool: str = "Pool-0") -> dict[str, Any]:
        """The pool's scheduler name and global parameters (``sched-* -s``)."""
        result: dict[str, Any] = self.client.call("sched_get", pool=pool)
        return result

    def set_scheduler_params(self, pool: str = "Pool-0", **params: int) -> None:
        self.client.call("sched_set", pool=pool, params=params)

    def cpupools(self) -> list[dict[str, Any]]:
        """Every cpupool: name, scheduler, CPUs, domain ids."""
        pools: list[dict[str, Any]] = self.client.call("cpupool", action="list")
        return pools

    def cpupool_create(self, name: str, cpus: list[int], sched: str | None = None) -> None:
        request: dict[str, Any] = {"action": "create", "pool": name, "cpus": cpus}
        if sched is not None:
            request["sched"] = sched
        self.client.call("cpupool", **request)

    def cpupool_cpus(self, name: str, add: Sequence[int] = (),
                     remove: Sequence[int] = ()) -> None:
        """cpupool-cpu-add / -cpu-remove."""
        if add:
            self.client.call("cpupool", action="cpu_add", pool=name, cpus=list(add))
        if remove:
            self.client.call("cpupool", action="cpu_remove", pool=name, cpus=list(remove))

    def cpupool_destroy(self, name: str) -> None:
        self.client.call("cpupool", action="destroy", pool=name)

    def dmesg(self, clear: bool = False) -> list[str]:
        lines: list[str] = self.client.call("dmesg", clear=clear)["lines"]
        return lines

    def close(self) -> None:
        self.client.close()


class Domain:
    """One domain of a hypervisor, by id."""

    def __init__(self, toolstack: Toolstack, domid: int) -> None:
        self.toolstack = toolstack
        self.domid = domid

    @classmethod
    def create(cls, config: str | Path | DomainConfig, overrides: list[str] | None = None,
               paused: bool = False, toolstack: Toolstack | None = None) -> Domain:
        """Create a domain from an xl.cfg file (with ``key=value`` overrides) or a config."""
        ts = toolstack or Toolstack()
        if not isinstance(config, DomainConfig):
            path = Path(config)
            config = DomainConfig.from_xl(apply_overrides(read_xl_cfg(path), overrides or []),
                                          path)
        result = ts.client.call("create", config=config_request(config), paused=paused)
        return cls(ts, int(result["domid"]))

    def _call(self, op: str, **args: Any) -> Any:
        return self.toolstack.client.call(op, domid=self.domid, **args)

    @property
    def name(self) -> str:
        return str(self.info()["name"])

    def info(self) -> dict[str, Any]:
        """xl's dominfo: memory, vCPUs, state flags, CPU time, shutdown reason."""
        info: dict[str, Any] = self._call("list")[0]
        return info

    def pause(self) -> None:
        """Stop every vCPU; returns once none is running."""
        self._call("pause")

    def unpause(self) -> None:
        self._call("unpause")

    def shutdown(self, reboot: bool = False, wait: bool = False,
                 timeout: float | None = None) -> int | None:
        """Shut down (or reboot); with ``wait``, the shutdown reason once it is down."""
        self._call("shutdown", reason=1 if reboot else 0)
        return self.wait(timeout) if wait else None

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the domain has shut down; its reason (None after ``timeout``)."""
        reason = self._call("wait", timeout=timeout)["reason"]
        return None if reason is None else int(reason)

    def destroy(self) -> None:
        self._call("destroy")

    def rename(self, name: str) -> None:
        self._call("rename", name=name)

    def sched_params(self) -> dict[str, Any]:
        """weight/cap (credit, credit2) or period/budget (rtds) of this domain."""
        params: dict[str, Any] = self._call("sched_get")["domain"]
        return params

    def set_sched_params(self, **params: int) -> None:
        self._call("sched_set", params=params)

    def pin(self, vcpu: int | None, hard: list[int] | None,
            soft: list[int] | None = None) -> None:
        """vcpu-pin: ``vcpu`` None for all; ``hard``/``soft`` None for every pCPU."""
        self._call("vcpu_pin", vcpu=-1 if vcpu is None else vcpu, hard=hard, soft=soft)

    def move_to_pool(self, pool: str) -> None:
        """cpupool-migrate."""
        self.toolstack.client.call("cpupool", action="migrate", pool=pool, domid=self.domid)

    def vcpus(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._call("vcpu_list")
        return rows

    def console(self, wait: float = CONSOLE_WAIT) -> socket.socket:
        """A socket to the domain's PV console (output in, keyboard input out)."""
        return open_console(self.toolstack.paths.run_dir / "console.sock", self.domid, wait)
