/* sched_op wrappers used for waiting. */
#include "rt.h"

long sched_block(void)
{
    return sched_op(SCHEDOP_block, NULL);
}

long sched_yield(void)
{
    return sched_op(SCHEDOP_yield, NULL);
}

long sched_poll(const evtchn_port_t *ports, unsigned int nr, uint64_t timeout)
{
    struct sched_poll p = {
        .ports = (uint64_t)(uintptr_t)ports,
        .nr_ports = nr,
        .timeout = timeout,
    };
    return sched_op(SCHEDOP_poll, &p);
}
