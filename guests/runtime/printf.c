/* printf-style formatting and console output. */
#include "rt.h"

struct out {
    char *buf;
    size_t size;
    size_t len;
};

static void put(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

/* v in base, after prefix ("-", "0x" or ""): padded to width with spaces before
 * the prefix, or with zeros after it (as C's printf does). */
static void put_num(struct out *o, unsigned long v, unsigned int base, const char *prefix,
                    int width, char pad, int upper)
{
    char tmp[24];
    int n = 0;
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    int len = n + (int)strlen(prefix);
    if (pad != '0')
        for (; len < width; len++)
            put(o, ' ');
    for (const char *p = prefix; *p; p++)
        put(o, *p);
    for (; len < width; len++)
        put(o, '0');
    while (n)
        put(o, tmp[--n]);
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = {buf, size, 0};

    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, lng = 0, alt = 0;
        for (;; fmt++) {
            if (*fmt == '0')
                pad = '0';
            else if (*fmt == '#')
                alt = 1; /* %#x: "0x" before a non-zero value */
            else
                break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            lng = 1;
            fmt++;
        }
        if (*fmt == 'z') {
            lng = 1;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i': {
            long v = lng ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
            put_num(&o, u, 10, v < 0 ? "-" : "", width, pad, 0);
            break;
        }
        case 'u':
            put_num(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int), 10, "",
                    width, pad, 0);
            break;
        case 'x':
        case 'X': {
            unsigned long v = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
            const char *prefix = alt && v ? (*fmt == 'X' ? "0X" : "0x") : "";
            put_num(&o, v, 16, prefix, width, pad, *fmt == 'X');
            break;
        }
        case 'p':
            put(&o, '0');
            put(&o, 'x');
            put_num(&o, (unsigned long)va_arg(ap, void *), 16, "", width, pad, 0);
            break;
        case 'c':
            put(&o, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = (int)strlen(s);
            for (; n < width; n++)
                put(&o, ' ');
            while (*s)
                put(&o, *s++);
            break;
        }
        case '%':
            put(&o, '%');
            break;
        case '\0':
            fmt--;
            break;
        default:
            put(&o, '%');
            put(&o, *fmt);
            break;
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

void e9_putc(char c)
{
    outb(XEN_HVM_DEBUGCONS_IOPORT, (uint8_t)c);
}

void e9_puts(const char *s)
{
    while (*s)
        e9_putc(*s++);
}

int vprintf(const char *fmt, va_list ap)
{
    char line[512];                 /* on the stack: any vCPU may print */
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    size_t len = strlen(line);

    if (!rt_xen_base)
        e9_puts(line);              /* no hypercall page: debug port only */
    else
        console_io(CONSOLEIO_write, len, line);
    return n;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}
