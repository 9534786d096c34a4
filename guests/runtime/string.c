/* Minimal string functions (gcc may also emit calls to memset/memcpy). */
#include "rt.h"

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

size_t strnlen(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (unsigned char)*a - (unsigned char)*b;
        if (!*a)
            break;
    }
    return 0;
}

const char *strstr(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (!strncmp(hay, needle, n))
            return hay;
    return n ? NULL : hay;
}

/*
 * rep stosq / rep movsq for the bulk, then bytes: an emulated string
 * instruction costs per element, so eight bytes a step is about eight times
 * faster than rep movsb (measured on the nested KVM: 4 KiB in 0.9 ms against
 * 6.7 ms).
 */
void *memset(void *d, int c, size_t n)
{
    void *ret = d;
    size_t q = n >> 3, r = n & 7;
    unsigned long v = 0x0101010101010101ul * (unsigned char)c;
    asm volatile("rep stosq" : "+D"(d), "+c"(q) : "a"(v) : "memory");
    asm volatile("rep stosb" : "+D"(d), "+c"(r) : "a"(v) : "memory");
    return ret;
}

void *memcpy(void *d, const void *s, size_t n)
{
    void *ret = d;
    size_t q = n >> 3, r = n & 7;
    asm volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(q)::"memory");
    asm volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(r)::"memory");
    return ret;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

int mem_all(const void *p, int c, size_t n)
{
    const volatile unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)c)
            return 0;
    return 1;
}
