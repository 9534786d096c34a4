"""``pyxen block-attach|block-detach|block-list``: xl's disk hot plug commands.

``block-attach DOMAIN DISKSPEC...`` takes an xl disk specification, split
over several arguments if you like (they are joined with commas, as xl
does), and returns once blkback has opened the image; the guest sees a
new device under device/vbd.  ``block-detach DOMAIN DEV`` (the vdev name,
``xvdb``, or its number, ``51728``) asks the guest to let go of the disk
and removes it; a guest that does not close it within 10 seconds has it
removed anyway, with a warning, as xl does.  ``block-list DOMAIN...``
prints xl's table (Vdev BE handle state evt-ch ring-ref BE-path; as in
xl, ``handle`` is the frontend's domain id).
"""

from __future__ import annotations

import argparse
import sys

from pyxen.control.client import ControlClient
from pyxen.toolstack.disk_spec import DiskSpecError, parse_disk_spec, vdev_number
from pyxen.toolstack.disks import served_disk


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("block-attach", help="add a disk to a running domain")
    a.add_argument("domain")
    a.add_argument("spec", nargs="+", metavar="DISKSPEC",
                   help="an xl disk spec, e.g. format=raw, vdev=xvdb, target=disk.img")
    d = sub.add_parser("block-detach", help="remove a disk from a domain")
    d.add_argument("domain")
    d.add_argument("device", metavar="DEV", help="its vdev (xvdb) or device number (51728)")
    lst = sub.add_parser("block-list", help="list a domain's disks")
    lst.add_argument("domains", nargs="+", metavar="DOMAIN")


def cmd_block_attach(args: argparse.Namespace, client: ControlClient) -> int:
    from pyxen.toolstack.commands import find_domain

    try:
        disk = served_disk(parse_disk_spec(",".join(args.spec)))
    except DiskSpecError as e:
        print(f"pyxen block-attach: {e}", file=sys.stderr)
        return 2
    client.call("block_attach", domid=find_domain(client, args.domain), disk=disk)
    return 0


def cmd_block_detach(args: argparse.Namespace, client: ControlClient) -> int:
    from pyxen.toolstack.commands import find_domain

    device: str = args.device
    try:
        devid = int(device) if device.isdigit() else vdev_number(device)
    except DiskSpecError as e:
        print(f"pyxen block-detach: {e}", file=sys.stderr)
        return 2
    domid = find_domain(client, args.domain)
    result = client.call("block_detach", domid=domid, devid=devid)
    if not result["closed"]:
        print(f"pyxen block-detach: domain {domid} did not close {device} in time; "
              "it was removed anyway", file=sys.stderr)
    return 0


def cmd_block_list(args: argparse.Namespace, client: ControlClient) -> int:
    from pyxen.toolstack.commands import find_domain

    print(f"{'Vdev':<10}{'BE':<4}{'handle':<7}{'state':<6}{'evt-ch':<7}{'ring-ref':<9}BE-path")
    for name in args.domains:
        domid = find_domain(client, name)
        for row in client.call("block_list", domid=domid)["disks"]:
            print(f"{row['vdev']:<10}{row['backend_id']:<4}{domid:<7}"
                  f"{row['state']:<6}{row['evtchn']:<7}{row['ring_ref']:<9}"
                  f"{row['backend_path']}")
    return 0
