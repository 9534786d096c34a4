"""``pyxen block-attach|-detach|-list`` and ``network-attach|-detach|-list``: xl's
hot plug commands for disks and network interfaces.

``block-attach DOMAIN DISKSPEC...`` takes an xl disk specification, split
over several arguments if you like (they are joined with commas, as xl
does), and returns once blkback has opened the image; the guest sees a
new device under device/vbd.  ``block-detach DOMAIN DEV`` (the vdev name,
``xvdb``, or its number, ``51728``) asks the guest to let go of the disk
and removes it; a guest that does not close it within 10 seconds has it
removed anyway, with a warning, as xl does.  ``block-list DOMAIN...``
prints xl's table (Vdev BE handle state evt-ch ring-ref BE-path; as in
xl, ``handle`` is the frontend's domain id).

``network-attach DOMAIN VIFSPEC...`` takes an xl vif specification
(``bridge=pyxenbr0,mac=00:16:3e:01:02:03``; no spec at all gives a random
MAC on netback's default bridge) and returns once netback has made the
interface's TAP device; ``network-detach DOMAIN DEVID|MAC`` removes one;
``network-list DOMAIN...`` prints xl's table (Idx BE Mac Addr. handle state
evt-ch tx-/rx-ring-ref BE-path).
"""

from __future__ import annotations

import argparse
import itertools
import sys

from pyxen.control.client import ControlClient
from pyxen.toolstack.disk_spec import DiskSpecError, parse_disk_spec, vdev_number
from pyxen.toolstack.pv_specs import served_disk, served_nic
from pyxen.toolstack.vif_spec import VifSpecError, parse_vif_spec


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    na = sub.add_parser("network-attach", help="add a network interface to a running domain")
    na.add_argument("domain")
    na.add_argument("spec", nargs="*", metavar="VIFSPEC",
                    help="an xl vif spec, e.g. bridge=pyxenbr0, mac=00:16:3e:01:02:03")
    nd = sub.add_parser("network-detach", help="remove a network interface from a domain")
    nd.add_argument("domain")
    nd.add_argument("device", metavar="DEVID|MAC")
    nl = sub.add_parser("network-list", help="list a domain's network interfaces")
    nl.add_argument("domains", nargs="+", metavar="DOMAIN")
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
        for row in client.call("block_list", domid=domid)["devices"]:
            print(f"{row['devid']:<10}{row['backend_id']:<4}{domid:<7}"
                  f"{row['state']:<6}{row['event_channel']:<7}{row['ring_ref']:<9}"
                  f"{row['backend_path']}")
    return 0


def cmd_network_attach(args: argparse.Namespace, client: ControlClient) -> int:
    from pyxen.toolstack.commands import find_domain

    domid = find_domain(client, args.domain)
    used = {row["devid"] for row in client.call("network_list", domid=domid)["devices"]}
    devid = next(i for i in itertools.count() if i not in used)
    try:
        nic = served_nic(parse_vif_spec(",".join(args.spec)), devid)
    except VifSpecError as e:
        print(f"pyxen network-attach: {e}", file=sys.stderr)
        return 2
    client.call("network_attach", domid=domid, nic=nic)
    return 0


def cmd_network_detach(args: argparse.Namespace, client: ControlClient) -> int:
    from pyxen.toolstack.commands import find_domain

    domid = find_domain(client, args.domain)
    device: str = args.device.lower()
    if device.isdigit():
        devid = int(device)
    else:
        match = [row["devid"] for row in client.call("network_list", domid=domid)["devices"]
                 if row.get("mac") == device]
        if not match:
            print(f"pyxen network-detach: domain {domid} has no interface {args.device}",
                  file=sys.stderr)
            return 1
        devid = match[0]
    result = client.call("network_detach", domid=domid, devid=devid)
    if not result["closed"]:
        print(f"pyxen network-detach: domain {domid} did not close interface {devid} in "
              "time; it was removed anyway", file=sys.stderr)
    return 0


def cmd_network_list(args: argparse.Namespace, client: ControlClient) -> int:
    from pyxen.toolstack.commands import find_domain

    print(f"{'Idx':<4}{'BE':<4}{'Mac Addr.':<18}{'handle':<7}{'state':<6}{'evt-ch':<7}"
          f"{'tx-/rx-ring-ref':<16}BE-path")
    for name in args.domains:
        domid = find_domain(client, name)
        for row in client.call("network_list", domid=domid)["devices"]:
            rings = f"{row['tx_ring_ref']}/{row['rx_ring_ref']}"
            print(f"{row['devid']:<4}{row['backend_id']:<4}{row['mac'] or '-':<18}"
                  f"{row['devid']:<7}{row['state']:<6}{row['event_channel']:<7}{rings:<16}"
                  f"{row['backend_path']}")
    return 0
