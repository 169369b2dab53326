// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * migshark test guest: a tiny 32-bit multiboot kernel for recording migrations.
 *
 * It fills `fill` MiB of RAM (from 4 MiB up) with a non-zero, page-unique (and compressible) pattern, so
 * the migration has real pages to send rather than zero pages, then keeps dirtying the first `dirty` pages of that area at
 * `rate` pages per second in a strided order (timed by polling the PIT, no interrupts), so precopy keeps iterating and
 * postcopy gets page requests. Progress goes to COM1 once a second.
 *
 * Arguments come from the multiboot command line (-append "fill=24 dirty=4096 rate=2000").
 */
#include <stdint.h>

#define MB_MAGIC 0x1BADB002u
#define MB_FLAGS 0x00000003u /* page-align modules, want memory info */

__attribute__((section(".multiboot"), aligned(4), used))
static const uint32_t multiboot_header[3] = {MB_MAGIC, MB_FLAGS, (uint32_t)-(MB_MAGIC + MB_FLAGS)};

struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower;
    uint32_t mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
};

#define FILL_BASE (4u << 20)
#define PAGE 4096u
#define PIT_HZ 1193182u
#define MAX_RATE 60000u /* keeps delta * rate inside 32 bits */
#define COM1 0x3F8
#define STRIDE 1031u /* prime: visits every page of any working set that is not a multiple of it */

uint8_t stack[16384] __attribute__((aligned(16), used));

__asm__(".section .text\n"
        ".global _start\n"
        "_start:\n"
        "  cli\n"
        "  mov $stack + 16384, %esp\n"
        "  push %ebx\n"
        "  push %eax\n"
        "  call kmain\n"
        "1: hlt\n"
        "  jmp 1b\n");

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static void serial_init(void)
{
    outb(COM1 + 1, 0x00); /* no interrupts */
    outb(COM1 + 3, 0x80); /* DLAB */
    outb(COM1 + 0, 0x01); /* 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1 */
    outb(COM1 + 2, 0xC7); /* FIFO */
}

static void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (uint8_t)c);
}

static void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

static void putu(uint32_t v)
{
    char buf[11];
    int i = 10;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i > 0);
    puts(&buf[i]);
}

/* Value of "key=<decimal>" in the command line, or def when absent. */
static uint32_t arg(const char *cmdline, const char *key, uint32_t def)
{
    if (!cmdline)
        return def;
    for (const char *p = cmdline; *p; p++) {
        if (p != cmdline && p[-1] != ' ')
            continue;
        const char *k = key, *q = p;
        while (*k && *q == *k) {
            k++;
            q++;
        }
        if (*k || *q != '=')
            continue;
        uint32_t v = 0;
        for (q++; *q >= '0' && *q <= '9'; q++)
            v = v * 10 + (uint32_t)(*q - '0');
        return v;
    }
    return def;
}

/* PIT channel 0, mode 2, reload 65536: a free-running down-counter we poll. */
static void pit_init(void)
{
    outb(0x43, 0x34);
    outb(0x40, 0x00);
    outb(0x40, 0x00);
}

static uint16_t pit_read(void)
{
    outb(0x43, 0x00); /* latch channel 0 */
    uint8_t lo = inb(0x40);
    uint8_t hi = inb(0x40);
    return (uint16_t)(lo | (hi << 8));
}

void kmain(uint32_t magic, const struct multiboot_info *mbi);
void kmain(uint32_t magic, const struct multiboot_info *mbi)
{
    const char *cmdline = 0;
    uint32_t mem_kib = 0;

    serial_init();
    if (magic == 0x2BADB002u) {
        if (mbi->flags & 1u)
            mem_kib = mbi->mem_upper + 1024u;
        if (mbi->flags & 4u)
            cmdline = (const char *)mbi->cmdline;
    }
    uint32_t fill_mib = arg(cmdline, "fill", 24);
    uint32_t dirty = arg(cmdline, "dirty", 4096);
    uint32_t rate = arg(cmdline, "rate", 2000);

    uint32_t avail_mib = mem_kib ? mem_kib / 1024u : 32u;
    if (fill_mib + 5u > avail_mib)
        fill_mib = avail_mib > 5u ? avail_mib - 5u : 0u;
    uint32_t pages = fill_mib * (1u << 20) / PAGE;
    if (dirty > pages)
        dirty = pages;
    if (rate > MAX_RATE)
        rate = MAX_RATE;

    puts("migshark-guest: mem=");
    putu(mem_kib / 1024u);
    puts("MiB fill=");
    putu(fill_mib);
    puts("MiB dirty=");
    putu(dirty);
    puts(" rate=");
    putu(rate);
    puts("\n");

    /*
     * Fill: a non-zero pattern (so QEMU sends every page as a normal page, not a zero page) that starts
     * with the page number (so no two pages are alike) and is otherwise constant, so captures gzip well.
     */
    volatile uint32_t *mem = (volatile uint32_t *)FILL_BASE;
    for (uint32_t i = 0; i < pages * (PAGE / 4u); i++)
        mem[i] = (i % (PAGE / 4u)) ? 0x6D696773u /* "migs" */ : i / (PAGE / 4u) + 1u;
    puts("migshark-guest: filled\n");

    if (!dirty || !rate) {
        puts("migshark-guest: idle\n");
        for (;;)
            __asm__ volatile("hlt");
    }

    pit_init();
    uint16_t last = pit_read();
    uint32_t acc = 0, tick_acc = 0, next = 0, step = 0, generation = 1, seconds = 0, total = 0;
    for (;;) {
        uint16_t now = pit_read();
        uint32_t delta = (uint16_t)(last - now);
        last = now;
        acc += delta * rate;
        tick_acc += delta;
        while (acc >= PIT_HZ) {
            acc -= PIT_HZ;
            /* Dirty one page: touch a word in each 1 KiB so the page stays non-uniform. */
            volatile uint32_t *pg = mem + next * (PAGE / 4u);
            pg[0] = generation;
            pg[256] = generation ^ next;
            total++;
            /* Stride through the working set, so postcopy sees scattered faults, not one sequential run. */
            next += STRIDE % dirty;
            if (next >= dirty)
                next -= dirty;
            if (++step == dirty) {
                step = 0;
                generation++;
            }
        }
        if (tick_acc >= PIT_HZ) {
            tick_acc -= PIT_HZ;
            seconds++;
            puts("migshark-guest: t=");
            putu(seconds);
            puts(" dirtied=");
            putu(total);
            puts("\n");
        }
    }
}
