"""``python3 -m pyxen.dm CONFIG``: an HVM domain's device model (started by the hypervisor).

CONFIG is JSON (hv/device_model.py writes it): the domain id, the vCPU
count, the inherited file descriptors and, with dm_restrict, the uid, gid
and chroot to drop to.  Everything is imported and every device built
before the sandbox is entered, so nothing needs the file system after it.

Test hook: if the hypervisor's environment has ``PYXEN_DM_TEST_PAYLOAD``
(a Python file), the device model reads it before entering the sandbox
and runs it right after, with ``server``, ``ops`` and ``config`` in its
namespace, before serving the guest.  tests/integration/test_hvm.py uses
it to run "compromised device model" code inside a real restricted
device model.  Setting it takes control of the hypervisor's environment,
which only root has.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from pyxen.dm.bus import DiskSpec, Machine
from pyxen.dm.server import DeviceModelServer, DmOps


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m pyxen.dm CONFIG-JSON (started by the pyxen hypervisor)",
              file=sys.stderr)
        return 2
    config = json.loads(argv[0])
    domid = int(config["domid"])
    ops = DmOps(socket.socket(fileno=int(config["ops_fd"])), domid)
    disks = [DiskSpec(int(d["position"]), int(d["fd"]), bool(d["readonly"]), int(d["size"]))
             for d in config["disks"]]
    holder: list[DeviceModelServer] = []
    machine = Machine(ops, disks, lambda data: holder[0].serial_out(data))
    server = DeviceModelServer(config, machine, ops)
    holder.append(server)
    payload_path = os.environ.get("PYXEN_DM_TEST_PAYLOAD")
    payload = None
    if payload_path:
        with open(payload_path) as f:
            payload = compile(f.read(), payload_path, "exec")
    restrict = config.get("restrict")
    if restrict is not None:
        from pyxen.dm.sandbox import SandboxPolicy, enter_sandbox

        enter_sandbox(SandboxPolicy(domid=domid, uid=int(restrict["uid"]),
                                    gid=int(restrict["gid"]),
                                    chroot_dir=Path(restrict["chroot"])))
    if payload is not None:
        exec(payload, {"server": server, "ops": ops, "config": config})
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
