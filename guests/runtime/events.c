/* shared_info, the upcall vector and the 2-level event-channel ABI. */
#include "rt.h"

volatile struct shared_info *rt_shinfo;

/* shared_info is mapped over this page (identity map: GFN = address >> 12). */
static uint8_t shinfo_page[PAGE_SIZE] __aligned(PAGE_SIZE);

static struct {
    evtchn_handler_t fn;
    void *data;
    unsigned int cpu;
} ports[RT_EVTCHN_PORTS];

long evt_init(void)
{
    struct xen_add_to_physmap x = {
        .domid = DOMID_SELF,
        .space = XENMAPSPACE_shared_info,
        .idx = 0,
        .gpfn = (uintptr_t)shinfo_page >> 12,
    };
    long rc = memory_op(XENMEM_add_to_physmap, &x);
    if (rc)
        return rc;
    rt_shinfo = (volatile struct shared_info *)shinfo_page;
    for (unsigned int i = 0; i < RT_MAX_CPUS; i++)
        rt_cpus[i].vi = &rt_shinfo->vcpu_info[i];

    struct xen_hvm_param p = {
        .domid = DOMID_SELF,
        .index = HVM_PARAM_CALLBACK_IRQ,
        .value = (HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | UPCALL_VECTOR,
    };
    return hvm_op(HVMOP_set_param, &p);
}

/* ---- hypercall wrappers ---- */

static void record(long port, unsigned int cpu)
{
    if (port >= 0 && port < RT_EVTCHN_PORTS)
        ports[port].cpu = cpu;
}

long evtchn_alloc_unbound(uint16_t dom, uint16_t remote_dom)
{
    struct evtchn_alloc_unbound op = {.dom = dom, .remote_dom = remote_dom};
    long rc = event_channel_op(EVTCHNOP_alloc_unbound, &op);
    if (rc)
        return rc;
    record(op.port, 0);
    return op.port;
}

long evtchn_bind_interdomain(uint16_t remote_dom, evtchn_port_t remote_port)
{
    struct evtchn_bind_interdomain op = {.remote_dom = remote_dom, .remote_port = remote_port};
    long rc = event_channel_op(EVTCHNOP_bind_interdomain, &op);
    if (rc)
        return rc;
    record(op.local_port, 0);
    return op.local_port;
}

long evtchn_bind_virq(uint32_t virq, uint32_t vcpu)
{
    struct evtchn_bind_virq op = {.virq = virq, .vcpu = vcpu};
    long rc = event_channel_op(EVTCHNOP_bind_virq, &op);
    if (rc)
        return rc;
    record(op.port, vcpu);
    return op.port;
}

long evtchn_bind_ipi(uint32_t vcpu)
{
    struct evtchn_bind_ipi op = {.vcpu = vcpu};
    long rc = event_channel_op(EVTCHNOP_bind_ipi, &op);
    if (rc)
        return rc;
    record(op.port, vcpu);
    return op.port;
}

long evtchn_send(evtchn_port_t port)
{
    struct evtchn_send op = {.port = port};
    return event_channel_op(EVTCHNOP_send, &op);
}

long evtchn_close(evtchn_port_t port)
{
    struct evtchn_close op = {.port = port};
    long rc = event_channel_op(EVTCHNOP_close, &op);
    if (rc == 0 && port < RT_EVTCHN_PORTS) {
        ports[port].fn = NULL;
        ports[port].data = NULL;
        ports[port].cpu = 0;
    }
    return rc;
}

long evtchn_status(uint16_t dom, evtchn_port_t port, struct evtchn_status *st)
{
    memset(st, 0, sizeof(*st));
    st->dom = dom;
    st->port = port;
    return event_channel_op(EVTCHNOP_status, st);
}

long evtchn_unmask(evtchn_port_t port)
{
    struct evtchn_unmask op = {.port = port};
    return event_channel_op(EVTCHNOP_unmask, &op);
}

long evtchn_bind_vcpu(evtchn_port_t port, uint32_t vcpu)
{
    struct evtchn_bind_vcpu op = {.port = port, .vcpu = vcpu};
    long rc = event_channel_op(EVTCHNOP_bind_vcpu, &op);
    if (rc == 0)
        record(port, vcpu);
    return rc;
}

/* ---- handler table and bitmaps ---- */

void evtchn_set_handler(evtchn_port_t port, evtchn_handler_t fn, void *data)
{
    if (port >= RT_EVTCHN_PORTS)
        return;
    ports[port].data = data;
    barrier();
    ports[port].fn = fn;
}

void evtchn_set_cpu(evtchn_port_t port, unsigned int cpu)
{
    record(port, cpu);
}

void evtchn_mask(evtchn_port_t port)
{
    test_and_set_bit(port % 64, &rt_shinfo->evtchn_mask[port / 64]);
}

void evtchn_unmask_local(evtchn_port_t port)
{
    test_and_clear_bit(port % 64, &rt_shinfo->evtchn_mask[port / 64]);
}

int evtchn_is_masked(evtchn_port_t port)
{
    return test_bit(port % 64, &rt_shinfo->evtchn_mask[port / 64]);
}

int evtchn_is_pending(evtchn_port_t port)
{
    return test_bit(port % 64, &rt_shinfo->evtchn_pending[port / 64]);
}

int evtchn_clear_pending(evtchn_port_t port)
{
    return test_and_clear_bit(port % 64, &rt_shinfo->evtchn_pending[port / 64]);
}

/*
 * The upcall (spec §6.2, "What the guest does"): clear upcall_pending, take
 * the selector with xchg, scan each selected word for pending & ~mask, clear
 * each pending bit atomically before running its handler.  Ports recorded
 * for another CPU are left alone: Xen notifies that CPU through its own
 * selector.  Repeat while Xen has set upcall_pending again meanwhile.
 */
void rt_upcall(void)
{
    struct cpu *c = this_cpu();
    volatile struct vcpu_info *vi = c->vi;
    volatile struct shared_info *s = rt_shinfo;

    c->upcalls++;
    if (!vi || !s)
        return;
    if (evt_fifo_on) {
        fifo_upcall(c);
        return;
    }
    do {
        vi->evtchn_upcall_pending = 0;
        uint64_t sel = xchg64(&vi->evtchn_pending_sel, 0);
        while (sel) {
            unsigned int w = (unsigned int)__builtin_ctzll(sel);
            sel &= sel - 1;
            uint64_t bits = s->evtchn_pending[w] & ~s->evtchn_mask[w];
            while (bits) {
                unsigned int b = (unsigned int)__builtin_ctzll(bits);
                bits &= bits - 1;
                evtchn_port_t port = w * 64 + b;
                unsigned int cpu = port < RT_EVTCHN_PORTS ? ports[port].cpu : 0;
                if (cpu != c->id)
                    continue;
                if (!test_and_clear_bit(b, &s->evtchn_pending[w]))
                    continue;
                evtchn_handler_t fn = port < RT_EVTCHN_PORTS ? ports[port].fn : NULL;
                if (fn) {
                    c->events++;
                    fn(port, ports[port].data);
                } else {
                    c->stray++;
                }
            }
        }
    } while (vi->evtchn_upcall_pending);
}

void evtchn_run_handler(evtchn_port_t port)
{
    struct cpu *c = this_cpu();
    evtchn_handler_t fn = port < RT_EVTCHN_PORTS ? ports[port].fn : NULL;
    if (fn) {
        c->events++;
        fn(port, ports[port].data);
    } else {
        c->stray++;
    }
}
