/* hello: the smallest guest: one line through console_io, one via port 0xE9. */
#include "rt.h"

const char rt_prog_name[] = "hello";

void test_main(const struct hvm_start_info *si)
{
    printf("Hello from a pyxen PVH guest\n");
    e9_puts("hello via port e9\n");
    check(si && si->magic == XEN_HVM_START_MAGIC_VALUE, "start info magic");
}
