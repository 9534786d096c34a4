/*
 * netpong: a minimal IPv4 host on the runtime's netfront, enough for the
 * host's `ping`: it answers ARP requests for its address (from its MAC)
 * and ICMP echo requests to it (an echo reply with the request's id,
 * sequence number and payload, a fresh IPv4 header with its checksum, the
 * ICMP checksum over the whole message).  Requests with a bad IPv4 header
 * checksum or ICMP checksum, fragments and IP options-bearing oddities are
 * counted and not answered; every other frame (IPv6, other hosts' ARP,
 * ...) is ignored.
 *
 * Command line:
 *   ip=<a.b.c.d>    our address (required)
 *   count=<n>       end after n echo replies
 *   secs=<s>        end after s seconds (default 60 without count; with
 *                   both, whichever comes first)
 *   devid=, queues=<q>, split=1 (netfront options)
 * Prints "netpong: listening ..." once connected, the first few replies, then
 *   netpong: arp_requests=A arp_replies=B echo_requests=C echo_replies=D
 *            bad=E ignored=F elapsed_ms=T
 * and RESULT netpong: PASS if every reply went out (NETIF_RSP_OKAY), no
 * request was malformed and, with count=, n replies were sent.
 */
#include "netfront.h"

const char rt_prog_name[] = "netpong";

#define ARP_LEN 28                   /* Ethernet/IPv4 ARP payload */
#define MIN_FRAME 60                 /* the Ethernet minimum (without FCS) */
#define IP_HLEN 20
#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8
#define IPPROTO_ICMP 1
#define SHOW_REPLIES 5

static struct netfront nf;
static uint8_t rx[NETFRONT_MAX_FRAME + 1], tx[NETFRONT_MAX_FRAME + 1];
static uint8_t my_ip[4];
static const uint8_t broadcast[NETFRONT_ETH_ALEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static unsigned long arp_requests, arp_replies, echo_requests, echo_replies, bad, ignored;
static long send_err;

static long parse_ip(const char *s, uint8_t ip[4])
{
    for (unsigned int i = 0; i < 4; i++) {
        unsigned int v = 0, digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 4) {
            v = v * 10 + (unsigned int)(*s++ - '0');
            digits++;
        }
        if (!digits || v > 255 || (i < 3 && *s++ != '.'))
            return -XEN_EINVAL;
        ip[i] = (uint8_t)v;
    }
    return *s ? -XEN_EINVAL : 0;
}

/* The Internet checksum (RFC 1071) of len bytes: the one's complement of
 * the one's complement sum of the big-endian 16-bit words. */
static uint16_t inet_csum(const uint8_t *p, size_t len)
{
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += get_be16(p + i);
    if (len & 1)
        sum += (uint32_t)p[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Sends len bytes of tx (padded to the Ethernet minimum), waiting for room. */
static void send_frame(size_t len)
{
    if (len < MIN_FRAME) {
        memset(tx + len, 0, MIN_FRAME - len);
        len = MIN_FRAME;
    }
    uint64_t deadline = now_ns() + 5 * NS_PER_SEC;
    long rc;
    while ((rc = netfront_send(&nf, tx, len)) == -XEN_EAGAIN) {
        long w = netfront_wait(&nf, NETFRONT_EV_TX, deadline);
        if (w < 0) {
            rc = w;
            break;
        }
    }
    if (rc < 0 && !send_err) {
        printf("netpong: send failed (%ld)\n", rc);
        send_err = rc;
    }
}

static void handle_arp(const uint8_t *f, long len)
{
    const uint8_t *a = f + NETFRONT_ETH_HLEN;
    if (len < NETFRONT_ETH_HLEN + ARP_LEN || get_be16(a) != 1 || get_be16(a + 2) != ETH_P_IP ||
        a[4] != 6 || a[5] != 4) {
        ignored++;
        return;
    }
    /* sha a+8, spa a+14, tha a+18, tpa a+24 */
    if (get_be16(a + 6) != 1 || memcmp(a + 24, my_ip, 4)) {
        ignored++;                           /* a reply, or a request for someone else */
        return;
    }
    arp_requests++;
    eth_header(tx, a + 8, nf.mac, ETH_P_ARP);
    uint8_t *r = tx + NETFRONT_ETH_HLEN;
    put_be16(r, 1);                          /* Ethernet */
    put_be16(r + 2, ETH_P_IP);
    r[4] = 6;
    r[5] = 4;
    put_be16(r + 6, 2);                      /* reply */
    memcpy(r + 8, nf.mac, NETFRONT_ETH_ALEN);
    memcpy(r + 14, my_ip, 4);
    memcpy(r + 18, a + 8, NETFRONT_ETH_ALEN);
    memcpy(r + 24, a + 14, 4);
    send_frame(NETFRONT_ETH_HLEN + ARP_LEN);
    if (!send_err)
        arp_replies++;
}

static void handle_ip(const uint8_t *f, long len)
{
    const uint8_t *ip = f + NETFRONT_ETH_HLEN;
    long avail = len - NETFRONT_ETH_HLEN;
    if (memcmp(f, nf.mac, NETFRONT_ETH_ALEN) || avail < IP_HLEN || (ip[0] >> 4) != 4 ||
        memcmp(ip + 16, my_ip, 4) || ip[9] != IPPROTO_ICMP) {
        ignored++;                           /* not ICMP to us */
        return;
    }
    unsigned int ihl = (ip[0] & 0xF) * 4u;
    unsigned int total = get_be16(ip + 2);
    if (ihl < IP_HLEN || total < ihl + 8 || (long)total > avail || inet_csum(ip, ihl) != 0) {
        if (bad++ < 5)
            printf("netpong: bad IPv4 header (ihl %u, total %u, %ld bytes)\n", ihl, total, avail);
        return;
    }
    if (get_be16(ip + 6) & 0x3FFF) {         /* MF or a fragment offset */
        ignored++;
        return;
    }
    const uint8_t *icmp = ip + ihl;
    unsigned int ilen = total - ihl;
    if (icmp[0] != ICMP_ECHO_REQUEST || icmp[1] != 0) {
        ignored++;
        return;
    }
    if (inet_csum(icmp, ilen) != 0) {
        if (bad++ < 5)
            printf("netpong: echo request with a bad ICMP checksum\n");
        return;
    }
    echo_requests++;
    /* the reply: Ethernet back to the sender, a plain 20-byte IPv4 header */
    eth_header(tx, f + NETFRONT_ETH_ALEN, nf.mac, ETH_P_IP);
    uint8_t *rip = tx + NETFRONT_ETH_HLEN;
    rip[0] = 0x45;
    rip[1] = ip[1];                          /* TOS */
    put_be16(rip + 2, (uint16_t)(IP_HLEN + ilen));
    put_be16(rip + 4, get_be16(ip + 4));     /* identification */
    put_be16(rip + 6, 0);                    /* no fragmentation flags */
    rip[8] = 64;                             /* TTL */
    rip[9] = IPPROTO_ICMP;
    put_be16(rip + 10, 0);
    memcpy(rip + 12, my_ip, 4);
    memcpy(rip + 16, ip + 12, 4);
    put_be16(rip + 10, inet_csum(rip, IP_HLEN));
    uint8_t *ricmp = rip + IP_HLEN;
    memcpy(ricmp, icmp, ilen);               /* id, sequence number, payload */
    ricmp[0] = ICMP_ECHO_REPLY;
    ricmp[1] = 0;
    put_be16(ricmp + 2, 0);
    put_be16(ricmp + 2, inet_csum(ricmp, ilen));
    send_frame(NETFRONT_ETH_HLEN + IP_HLEN + ilen);
    if (send_err)
        return;
    echo_replies++;
    if (echo_replies <= SHOW_REPLIES)
        printf("netpong: echo reply to %u.%u.%u.%u id=%u seq=%u len=%u\n", ip[12], ip[13],
               ip[14], ip[15], get_be16(icmp + 4), get_be16(icmp + 6), ilen);
}

void test_main(const struct hvm_start_info *si)
{
    char buf[32], devbuf[16];
    struct netfront_opts opts = {0};
    const char *devid = cmdline_get("devid", devbuf, sizeof(devbuf)) > 0 ? devbuf : NULL;
    if (cmdline_get("ip", buf, sizeof(buf)) <= 0 || parse_ip(buf, my_ip) < 0) {
        check(0, "ip=<a.b.c.d> on the command line");
        rt_finish();
    }
    unsigned long count = cmdline_get_ulong("count", 0);
    unsigned long secs = cmdline_get_ulong("secs", count ? 0 : 60);
    opts.queues = (unsigned int)cmdline_get_ulong("queues", 1);
    opts.split_evtchn = cmdline_get_ulong("split", 0) != 0;

    long rc = netfront_open(&nf, devid, &opts);
    if (!check(rc == 0, "open vif %s (rc %ld)", devid ? devid : "(first)", rc))
        rt_finish();
    char mac[18];
    netfront_format_mac(nf.mac, mac);
    printf("netpong: listening on %u.%u.%u.%u mac %s (count=%lu secs=%lu)\n", my_ip[0], my_ip[1],
           my_ip[2], my_ip[3], mac, count, secs);

    uint64_t t0 = now_ns();
    uint64_t end = secs ? t0 + secs * NS_PER_SEC : ~0ull;
    while ((!count || echo_replies < count) && !send_err) {
        long len = netfront_recv(&nf, rx, sizeof(rx), end);
        if (len == -XEN_ETIMEDOUT)
            break;
        if (len < 0) {
            check(0, "receive (rc %ld)", len);
            break;
        }
        if (len < NETFRONT_ETH_HLEN || (memcmp(rx, nf.mac, NETFRONT_ETH_ALEN) &&
                                        memcmp(rx, broadcast, NETFRONT_ETH_ALEN))) {
            ignored++;
            continue;
        }
        uint16_t type = get_be16(rx + 12);
        if (type == ETH_P_ARP)
            handle_arp(rx, len);
        else if (type == ETH_P_IP)
            handle_ip(rx, len);
        else
            ignored++;
    }
    long drained = netfront_tx_drain(&nf, now_ns() + 10 * NS_PER_SEC);
    printf("netpong: arp_requests=%lu arp_replies=%lu echo_requests=%lu echo_replies=%lu bad=%lu "
           "ignored=%lu elapsed_ms=%lu\n",
           arp_requests, arp_replies, echo_requests, echo_replies, bad, ignored,
           (unsigned long)((now_ns() - t0) / NS_PER_MS));
    expect_eq(send_err, 0, "every reply went on the ring");
    expect_eq(drained, 0, "every TX slot answered");
    check(nf.stats.tx_errors == 0 && nf.stats.tx_dropped == 0,
          "every reply answered NETIF_RSP_OKAY (errors %lu, dropped %lu)",
          (unsigned long)nf.stats.tx_errors, (unsigned long)nf.stats.tx_dropped);
    expect_eq(bad, 0, "no malformed request");
    expect_eq(nf.stats.rx_errors, 0, "no bad RX packet");
    if (count)
        check(echo_replies == count, "answered %lu echo requests (%lu)", count, echo_replies);
    expect_eq(netfront_close(&nf), 0, "close (Closing, Closed)");
    rt_finish();
}
