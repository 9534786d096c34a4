"""A domain: its KVM VM, its memory and p2m accounting, its vCPUs and its state.

Memory accounting follows Xen: ``tot_pages`` counts RAM pages the domain
owns (mapped, or allocated but unmapped), ``max_pages`` caps it.  Hypervisor
pages (shared_info, grant frames, v2 grant status frames) live in the
pool's heap part and are not counted; they can be mapped at any frame the
guest chooses, replacing whatever was there (RAM there is freed, as Xen
frees it).

Every memory operation is one p2m change (``GuestMemory.edit``): it is
seen whole or not at all by the lock-free readers, and when the KVM slot
budget cannot take it, it raises ``SlotsExhausted`` with nothing changed
(no page freed, no heap page unhooked, ``tot_pages`` as it was); the
hypercalls turn that into Xen's answer (hv/hypercalls/memory_op.py).

Grants (``grants``, see ``pyxen.hv.grant_table``): a RAM page the guest
frees while another domain uses it through a grant stays owned (and
counted) until the last use goes; it is returned to the pool at the
domain's next memory operation (``reap_freed``).  The same holds for the
pages the hypervisor keeps using for the FIFO event ABI
(``grants.hold_page``).  A frame holding another domain's page (a grant
mapping, ``PageKind.FOREIGN``) cannot be replaced or removed by memory_op
(Xen: the extent fails, add_to_physmap -ENXIO); only
GNTTABOP_unmap_grant_ref removes it.

Shutdown: the first ``shutdown(reason)`` wins; ``shutdown_code`` latched by
the guest beforehand overrides the reason reported (SCHEDOP_shutdown_code).
All vCPUs are stopped and ``wait()`` returns the reason.

Events and time: the shared_info page is a hypervisor page that always
exists (heap page 0), whether or not the guest has mapped it, so event
bits and time can be written before the guest asks for it.  ``layout``
follows the latched mode.  ``events`` is the port table (guarded by the
hypervisor's event lock); ``evtchn_ops`` the event ABI in use (2-level
until the guest switches to FIFO); ``dying`` is set before teardown so
that no delivery reaches a domain whose memory is going away.

Pause: ``pause()`` raises ``pause_count`` and returns once every vCPU
thread is quiescent (parked or finished); ``unpause()`` lets them run.  A
vCPU in a long hypercall leaves it at its next preemption point through a
continuation (hv/dispatch.py), so the wait is bounded by one batch element.

Locking: ``lock`` serialises p2m changes with their accounting, and state
transitions (the p2m's own writer lock is a leaf inside it; its readers
take no lock); vCPU threads take it only on slow paths (memory_op), never
for a null hypercall.
It may be held while taking a grant-table lock, never the reverse.
``time_lock`` serialises writers of the pvclock areas.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyxen.abi.hvm import HVM_NR_PARAMS
from pyxen.abi.sched import NR_DOMAIN_WATCHDOG_TIMERS
from pyxen.abi.xen import ShutdownReason, Virq
from pyxen.boot.e820 import E820Entry
from pyxen.hv import event_channel
from pyxen.hv.altp2m import Altp2m
from pyxen.hv.argo.policy import DEFAULT_DOMU_LABEL
from pyxen.hv.cpuid import HYPERCALL_MSR
from pyxen.hv.event_channel import DEFAULT_MAX_EVTCHN_PORT, TWO_LEVEL, EventChannels, PortOps
from pyxen.hv.grant_table import MAX_MAPTRACK, SLOT_RESERVE, GrantTable, status_frames_for
from pyxen.hv.lapic import LAPIC_MSRS, LapicBus
from pyxen.hv.shared_info import Layout, layout_for, write_wallclock
from pyxen.hv.timers import Timer
from pyxen.hv.vcpu_control import Req
from pyxen.kvm import Vm
from pyxen.kvm.ioctls import KVM_CAP_NR_MEMSLOTS, KVM_CAP_READONLY_MEM
from pyxen.memory import PAGE_SIZE, Gfn, GuestMemory, PageKind
from pyxen.memory.physmap import SlotProgrammer

if TYPE_CHECKING:
    from pyxen.hv.device_model import DeviceModel
    from pyxen.hv.hypervisor import Hypervisor
    from pyxen.hv.platform import Platform
    from pyxen.hv.vcpu import VcpuRunner
    from pyxen.vmi import Vmi

# Heap page layout in the pool: shared_info first, then the grant frames,
# then the v2 grant status frames (Domain.grant_status_heap_base).
SHARED_INFO_HEAP_INDEX = 0
GRANT_FRAME_HEAP_BASE = 1
DEFAULT_MAX_GRANT_FRAMES = 64
# Xen's default maximum extent order for a domU's memory_op (CONFIG_DOMU_MAX_ORDER).
DOMU_MAX_ORDER = 9
# KVM memory slots that a domain's own memory changes (populate/decrease,
# add_to_physmap) leave to grant mappings and the hypervisor's removals (the
# slot budget, memory/physmap.py): at least 512 grant mappings fit however
# fragmented the guest makes its RAM (each may take two slots: its own and
# the split of the RAM extent it lands in).
P2M_SLOT_RESERVE = 1024
# HVM_PARAM_CALLBACK_IRQ: type in bits 63:56; type 2 delivers a vector (§4.3).
CALLBACK_TYPE_SHIFT = 56
CALLBACK_TYPE_VECTOR = 2


class _VmSlots(SlotProgrammer):
    def __init__(self, vm: Vm) -> None:
        self.vm = vm

    def set_slot(self, slot: int, gpa: int, size: int, host_addr: int,
                 readonly: bool = False) -> None:
        self.vm.set_memory_region(slot, gpa, size, host_addr, readonly)


def random_handle() -> bytes:
    """A fresh domain handle: a random UUID's 16 bytes (version 4, RFC 4122 variant),
    made here because importing the uuid module costs ~3 ms of every start-up."""
    handle = bytearray(os.urandom(16))
    handle[6] = handle[6] & 0x0F | 0x40
    handle[8] = handle[8] & 0x3F | 0x80
    return bytes(handle)


class Domain:
    def __init__(self, hv: Hypervisor, domid: int, name: str, max_pages: int,
                 max_vcpus: int, e820: list[E820Entry], phys_bits: int,
                 max_evtchn_port: int = DEFAULT_MAX_EVTCHN_PORT) -> None:
        self.hv = hv
        self.domid = domid
        self.name = name
        self.handle = random_handle()
        self.privileged = False
        self.seclabel = DEFAULT_DOMU_LABEL  # xl.cfg seclabel: its type is the XSM policy's
        self.vm = Vm(hv.kvm)
        # The x2APIC MSRs bypass KVM's filter and fail in KVM: they arrive as
        # "invalid" exits, so every MSR KVM refuses is answered by pyxen (#GP).
        self.vm.filter_msrs([HYPERCALL_MSR, *LAPIC_MSRS], invalid_to_user=True)
        self.max_grant_frames = DEFAULT_MAX_GRANT_FRAMES
        self.grant_status_heap_base = GRANT_FRAME_HEAP_BASE + self.max_grant_frames
        heap_pages = self.grant_status_heap_base + status_frames_for(self.max_grant_frames)
        slots = hv.kvm.check_extension(KVM_CAP_NR_MEMSLOTS)
        self.memory = GuestMemory(max_pages, heap_pages,
                                  name=f"pyxen-d{domid}", slots=_VmSlots(self.vm),
                                  slot_limit=slots,
                                  slot_reserve=min(P2M_SLOT_RESERVE, slots // 2))
        self.memory_closed = False
        self.altp2m = Altp2m(self.memory)
        self.max_pages = max_pages
        self.tot_pages = 0
        self.max_gfn = 1 << (phys_bits - 12)
        self.max_vcpus = max_vcpus
        self.e820 = e820
        self.start_info_gpa = 0
        self.params = [0] * HVM_NR_PARAMS
        # None until the guest latches the shared-info format (hypercall page or CALLBACK_IRQ).
        self.compat: bool | None = None
        self.shared_info_gfn: int | None = None
        self.grant_frame_gfns: dict[int, int] = {}
        self.grant_status_gfns: dict[int, int] = {}
        self.grants = GrantTable(
            self, self.max_grant_frames, self.grant_status_heap_base, GRANT_FRAME_HEAP_BASE,
            maptrack_limit=max(0, min(MAX_MAPTRACK, (slots - SLOT_RESERVE) // 2)),
            readonly_slots=hv.kvm.check_extension(KVM_CAP_READONLY_MEM) > 0)
        shinfo_page = self.memory.heap_pool_page(SHARED_INFO_HEAP_INDEX)
        self.shared_info_view = self.memory.pool_view(shinfo_page)
        self.shared_info_host = self.memory.host_base + shinfo_page * PAGE_SIZE
        self.vcpus: list[VcpuRunner] = []
        self.lapic_bus = LapicBus()  # every vCPU's local APIC, for IPIs
        self.events = EventChannels(self, max_evtchn_port)
        self.evtchn_ops: PortOps = TWO_LEVEL  # FIFO after EVTCHNOP_init_control
        self.callback_vector: int | None = None
        self.pollers: set[VcpuRunner] = set()
        self.dying = False
        # destroy() runs once; a concurrent second call (the daemon closing while a
        # shutdown action destroys the domain) waits for the first to finish.
        self._destroy_lock = threading.Lock()
        self.destroyed = False
        self.pause_count = 0
        self._quiesce = threading.Condition()
        self.time_lock = threading.Lock()
        self.watchdogs: list[Timer | None] = [None] * NR_DOMAIN_WATCHDOG_TIMERS
        self.lock = threading.RLock()
        self.shutdown_reason: int | None = None
        self.shutdown_code: int | None = None
        self._shut_down = threading.Event()
        self._reported: set[str] = set()
        # Instructions KVM could not emulate, done by pyxen (hv/emulate): mnemonic -> count.
        self.emulation_counts: collections.Counter[str] = collections.Counter()
        self.on_shutdown: list[Callable[[Domain], None]] = []
        # HVM only (hv/hvm_domain.py): the emulated platform devices, the device-model
        # process and the xenstore keys hvmloader reads.  None/empty for PVH.
        self.platform: Platform | None = None
        self.device_model: DeviceModel | None = None
        self.hvm_xenstore: dict[str, str] = {}
        # Introspection attached to this domain (pyxen.vmi.Vmi), None normally: it
        # receives the vCPUs' KVM_EXIT_DEBUG exits.
        self.vmi: Vmi | None = None

    # -- messages ------------------------------------------------------------

    def log(self, message: str) -> None:
        self.hv.console.log(f"d{self.domid}: {message}")

    def log_once(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self.log(message)

    # -- memory ----------------------------------------------------------------

    def populate_range(self, gfn: int, count: int) -> None:
        """Back [gfn, gfn+count) with fresh RAM (used by the builder)."""
        self.reap_freed()
        first = None
        if self.tot_pages + count <= self.max_pages:
            first = self.memory.alloc_ram_pages(count)
        if first is None:
            raise MemoryError(f"d{self.domid}: no room for {count} pages at gfn {gfn:#x}")
        self.memory.map(Gfn(gfn), count, first, PageKind.RAM)
        self.tot_pages += count

    def _release(self, found: tuple[int, PageKind] | None) -> None:
        """What a committed p2m change took out: RAM goes back to the pool (unless a
        grant still uses it), a heap page is unhooked (Xen: guest_remove_page)."""
        if found is None:
            return
        pool_page, kind = found
        if kind is PageKind.RAM:
            self._free_ram(pool_page)
        elif kind is PageKind.HEAP:
            self._forget_heap(pool_page)

    def _free_ram(self, pool_page: int) -> None:
        """An unmapped RAM page goes back to the pool, unless a grant still uses it."""
        if self.grants.free_ram(pool_page):
            self.memory.free_ram_page(pool_page)
            self.tot_pages -= 1

    def reap_freed(self) -> None:
        """Free the pages whose last grant use went since they were freed (lock held)."""
        for page in self.grants.take_freed():
            self.memory.free_ram_page(page)
            self.tot_pages -= 1

    def populate_page(self, gfn: int) -> bool:
        """populate_physmap of one page; False when the domain is at max_pages.

        Raises SlotsExhausted (nothing changed) when the p2m has no slot for it."""
        self.reap_freed()
        if self.tot_pages >= self.max_pages:
            return False
        existing = self.memory.lookup(Gfn(gfn))
        if existing is not None and existing[1] is PageKind.FOREIGN:
            return False
        page = self.memory.alloc_ram_pages(1)
        if page is None:
            return False
        try:
            with self.memory.edit() as p2m:
                # Xen leaves a replaced RAM page allocated to the domain but unmapped.
                p2m.unmap(Gfn(gfn))
                p2m.map(Gfn(gfn), 1, page, PageKind.RAM)
        except BaseException:
            self.memory.free_ram_page(page)
            raise
        if existing is not None and existing[1] is PageKind.HEAP:
            self._forget_heap(existing[0])
        self.tot_pages += 1
        return True

    def _forget_heap(self, pool_page: int) -> None:
        index = pool_page - self.memory.heap_pool_page(0)
        if index == SHARED_INFO_HEAP_INDEX:
            self.shared_info_gfn = None
        elif index >= self.grant_status_heap_base:
            self.grant_status_gfns.pop(index - self.grant_status_heap_base, None)
        else:
            self.grant_frame_gfns.pop(index - GRANT_FRAME_HEAP_BASE, None)

    def _heap_gfn(self, heap_index: int) -> int | None:
        """Where the guest mapped heap page ``heap_index`` (None: nowhere)."""
        if heap_index == SHARED_INFO_HEAP_INDEX:
            return self.shared_info_gfn
        if heap_index >= self.grant_status_heap_base:
            return self.grant_status_gfns.get(heap_index - self.grant_status_heap_base)
        return self.grant_frame_gfns.get(heap_index - GRANT_FRAME_HEAP_BASE)

    def remove_page(self, gfn: int) -> bool:
        """decrease_reservation of one page; False if nothing (or a grant mapping) is there.

        Raises SlotsExhausted (nothing changed) when removing it would split an
        extent and the p2m has no slot for the second part."""
        found = self.memory.lookup(Gfn(gfn))
        if found is None or found[1] is PageKind.FOREIGN:
            return False
        self.memory.unmap(Gfn(gfn))
        self._release(found)
        return True

    def reserve_pages(self, count: int) -> bool:
        """increase_reservation for a translated guest: pages owned but mapped nowhere."""
        self.reap_freed()
        if self.tot_pages + count > self.max_pages:
            return False
        self.tot_pages += count
        return True

    def map_heap_page(self, heap_index: int, gfn: int) -> None:
        """Map a hypervisor page at ``gfn``: unmap it from where it was, evict what is at gfn.

        One p2m change.  Raises FrameInUse if ``gfn`` holds a grant mapping and
        SlotsExhausted if the p2m has no slot for it (nothing changed either way)."""
        pool_page = self.memory.heap_pool_page(heap_index)
        found = self.memory.lookup(Gfn(gfn))
        if found is not None and found[1] is PageKind.FOREIGN:
            raise FrameInUse(gfn)
        old_gfn = self._heap_gfn(heap_index)
        with self.memory.edit() as p2m:
            if old_gfn is not None:
                p2m.unmap(Gfn(old_gfn))
            evicted = p2m.unmap(Gfn(gfn))
            p2m.map(Gfn(gfn), 1, pool_page, PageKind.HEAP)
        if old_gfn is not None:
            self._forget_heap(pool_page)
        self._release(evicted)
        if heap_index == SHARED_INFO_HEAP_INDEX:
            self.shared_info_gfn = gfn
        elif heap_index >= self.grant_status_heap_base:
            self.grant_status_gfns[heap_index - self.grant_status_heap_base] = gfn
        else:
            self.grant_frame_gfns[heap_index - GRANT_FRAME_HEAP_BASE] = gfn

    def unmap_heap_pages(self, heap_indices: list[int]) -> None:
        """Remove hypervisor pages from the p2m where the guest mapped them (lock held).

        One p2m change, which may use the reserved slots; SlotsExhausted (nothing
        changed) only when every slot of the host is in use."""
        gfns = {i: g for i in heap_indices if (g := self._heap_gfn(i)) is not None}
        if not gfns:
            return
        with self.memory.edit(reserve=True) as p2m:
            for gfn in gfns.values():
                p2m.unmap(Gfn(gfn))
        for index in gfns:
            self._forget_heap(self.memory.heap_pool_page(index))

    def move_page(self, src_gfn: int, dst_gfn: int) -> bool:
        """XENMAPSPACE_gmfn: move the RAM page at src to dst.  False if src is not RAM.

        One p2m change.  Raises FrameInUse if ``dst_gfn`` holds a grant mapping
        and SlotsExhausted if the p2m has no slot for it (nothing changed either way)."""
        found = self.memory.lookup(Gfn(src_gfn))
        if found is None or found[1] is not PageKind.RAM:
            return False
        if src_gfn == dst_gfn:
            return True
        dst = self.memory.lookup(Gfn(dst_gfn))
        if dst is not None and dst[1] is PageKind.FOREIGN:
            raise FrameInUse(dst_gfn)
        with self.memory.edit() as p2m:
            p2m.unmap(Gfn(src_gfn))
            evicted = p2m.unmap(Gfn(dst_gfn))
            p2m.map(Gfn(dst_gfn), 1, found[0], PageKind.RAM)
        self._release(evicted)
        return True

    def insert_foreign(self, gfn: int, host_addr: int, pool_page: int, readonly: bool) -> bool:
        """Map another domain's page (a grant) at ``gfn``; False if a grant mapping is there.

        What was at ``gfn`` goes as Xen's guest_physmap_add_entry makes it go:
        a RAM page stays owned but unmapped, a heap page is unhooked.  One p2m
        change, which may use the reserved slots; SlotsExhausted (nothing
        changed) when every slot of the host is in use."""
        with self.lock:
            found = self.memory.lookup(Gfn(gfn))
            if found is not None and found[1] is PageKind.FOREIGN:
                return False
            with self.memory.edit(reserve=True) as p2m:
                p2m.unmap(Gfn(gfn))
                p2m.map_foreign(Gfn(gfn), host_addr, pool_page, readonly)
            if found is not None and found[1] is PageKind.HEAP:
                self._forget_heap(found[0])
            return True

    def latch_mode(self, compat: bool) -> None:
        """Fix the shared-info layout (64-bit or compat) the guest uses."""
        if self.compat != compat:
            self.compat = compat
            self.publish_wallclock()

    @property
    def layout(self) -> Layout:
        return layout_for(self.compat)

    # -- events and time -------------------------------------------------------

    def set_callback_irq(self, value: int) -> None:
        """HVM_PARAM_CALLBACK_IRQ: only the vector type can be delivered on PVH."""
        if value >> CALLBACK_TYPE_SHIFT == CALLBACK_TYPE_VECTOR:
            self.callback_vector = value & 0xFF
        else:
            # GSI and PCI INTx need an emulated IOAPIC/PIC, which a PVH domain
            # lacks; Xen ignores them silently there, and so does pyxen.
            self.callback_vector = None
        for vcpu in self.vcpus:
            vcpu.request(Req.UPCALL)

    def publish_wallclock(self) -> None:
        with self.time_lock:
            write_wallclock(self.shared_info_view, self.layout, self.hv.wallclock_base_ns)

    def publish_time(self, vcpu: VcpuRunner) -> None:
        """New pvclock parameters for ``vcpu`` from a fresh TSC sample (its start,
        or its wake-up after a missed calibration tick)."""
        tsc, now = self.hv.tsc.sample()
        self.update_time(vcpu, tsc, now, self.hv.tsc.hz)

    def update_time(self, vcpu: VcpuRunner, tsc: int, now: int, hz: int) -> None:
        """Refresh one vCPU's pvclock parameters from the sample (tsc, now)."""
        with self.time_lock:
            if not self.dying:
                vcpu.time.update_time(tsc, now, hz)

    # -- pause -----------------------------------------------------------------

    def pause(self) -> None:
        """Stop every vCPU and return once none is in the guest or handling an exit."""
        if any(v.control.is_current() for v in self.vcpus):
            raise RuntimeError("a domain cannot pause itself from one of its vCPUs")
        with self.lock:
            self.pause_count += 1
        for vcpu in self.vcpus:
            vcpu.request(Req.STATE)
        with self._quiesce:
            self._quiesce.wait_for(lambda: all(v.quiescent for v in self.vcpus))

    def unpause(self) -> None:
        with self.lock:
            if self.pause_count == 0:
                raise RuntimeError(f"d{self.domid} is not paused")
            self.pause_count -= 1
        for vcpu in self.vcpus:
            vcpu.request(Req.STATE)

    def vcpu_quiesced(self) -> None:
        """A vCPU thread parked or ended (called from that thread)."""
        with self._quiesce:
            self._quiesce.notify_all()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start every vCPU thread; those not yet up park until VCPUOP_up."""
        self.publish_wallclock()
        for runner in self.vcpus:
            runner.start()

    def shutdown(self, reason: int) -> None:
        """Shut the domain down (first call wins) and stop every vCPU."""
        with self.lock:
            if self.shutdown_reason is not None:
                return
            if self.shutdown_code is None:
                self.shutdown_code = reason
            self.shutdown_reason = self.shutdown_code
        name = reason_name(self.shutdown_reason)
        self.log(f"shutdown: {name}")
        for runner in self.vcpus:
            runner.request_stop()
        self._shut_down.set()
        self.hv.send_global_virq(Virq.DOM_EXC)
        for callback in self.on_shutdown:
            callback(self)

    def crash(self, why: str) -> None:
        self.log(f"crashed: {why}")
        self.shutdown(ShutdownReason.crash)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the domain has shut down; return its reason (None on timeout)."""
        self._shut_down.wait(timeout)
        return self.shutdown_reason

    def destroy(self) -> None:
        """Stop the vCPUs and release every resource (threads, fds, memory); once."""
        with self._destroy_lock:
            if not self.destroyed:
                self._destroy()
                self.destroyed = True

    def _destroy(self) -> None:
        if self.shutdown_reason is None:
            with self.lock:
                self.shutdown_reason = ShutdownReason.poweroff
            self._shut_down.set()
        with self.hv.event_lock:
            event_channel.destroy(self, self.hv.domains)
            self.dying = True
        with self.lock:
            for timer in self.watchdogs:
                if timer is not None:
                    timer.cancel()
        if self.device_model is not None:
            self.device_model.channel.shut("the domain is being destroyed")
        for runner in self.vcpus:
            runner.request_stop()
        for runner in self.vcpus:
            runner.join()
        if self.device_model is not None:
            self.device_model.close()
        if self.platform is not None:
            self.platform.close()
        self.hv.argo.detach(self.domid)  # no ring copy reaches this memory after this
        # No slot of another domain may point into this pool once it is unmapped.
        self.grants.teardown()
        self.hv.domain_destroyed(self)
        with self.time_lock:
            for runner in self.vcpus:
                runner.close()
            self.shared_info_view.release()
        self.hv.console.flush_domain(self.domid)
        with self.lock:
            self.memory_closed = True
            self.memory.close()
        self.vm.close()


class FrameInUse(Exception):
    """A frame holds a grant mapping of another domain's page (Xen: -ENXIO)."""

    def __init__(self, gfn: int) -> None:
        super().__init__(f"frame {gfn:#x} holds a grant mapping")
        self.gfn = gfn


def reason_name(reason: int) -> str:
    try:
        return ShutdownReason(reason).name
    except ValueError:
        return f"reason {reason}"
