/* dirtier: writes guest memory at a fixed rate, so precopy has pages to send again each round.
 *
 *   dirtier RATE_MB_S WORKSET_MIB
 *
 * Every 10 ms (on an absolute schedule) it writes one word into each of the next
 * RATE * 10 ms / 4096 pages of a WORKSET_MIB buffer, wrapping around. One write per page is
 * enough: the hypervisor tracks dirtiness per 4 KiB page, so the dirty rate QEMU measures
 * (query-migrate ram.dirty-pages-rate * 4096) equals RATE as long as the working set is larger
 * than what is dirtied within one precopy round. 1 MB = 10^6 bytes, as QEMU counts.
 * Prints "dirtier: ready" once the working set is resident, then the achieved rate every 10 s.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096
#define TICK_NS 10000000L

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000L + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dirtier RATE_MB_S WORKSET_MIB\n");
        return 2;
    }
    double rate = atof(argv[1]);
    size_t pages = ((size_t)atol(argv[2]) << 20) / PAGE;
    if (rate <= 0 || pages == 0) { fprintf(stderr, "dirtier: rate and working set must be > 0\n"); return 2; }
    /* populated and locked: the guest must not swap or fault lazily, or the rate would be
     * the page-fault handler's, not ours */
    volatile uint8_t *ws = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (ws == MAP_FAILED) { perror("dirtier: mmap"); return 1; }
    mlock((void *)ws, pages * PAGE);
    for (size_t i = 0; i < pages; i++) ws[i * PAGE] = 1;
    printf("dirtier: ready, %.1f MB/s over %zu MiB\n", rate, (pages * PAGE) >> 20);
    fflush(stdout);

    double per_tick = rate * 1e6 / PAGE * (TICK_NS / 1e9), carry = 0;
    size_t next_page = 0;
    uint64_t stamp = 0, written = 0;
    int64_t t_next = now_ns(), t_report = t_next;
    for (;;) {
        carry += per_tick;
        size_t n = (size_t)carry;
        carry -= (double)n;
        for (size_t i = 0; i < n; i++) {
            /* a changing value at a moving offset: a page is never left identical (zero-page
             * or dedup tricks cannot skip it) */
            stamp++;
            *(volatile uint64_t *)(ws + next_page * PAGE + (stamp % (PAGE / 8)) * 8) = stamp;
            if (++next_page == pages) next_page = 0;
        }
        written += n;
        t_next += TICK_NS;
        int64_t t = now_ns();
        if (t - t_report >= 10000000000L) {
            printf("dirtier: %.1f MB/s\n", (double)written * PAGE / 1e6 / ((t - t_report) / 1e9));
            fflush(stdout);
            written = 0;
            t_report = t;
        }
        /* After a long stall (the VM was paused for migration) restart the schedule instead of
         * catching up in a burst: a burst right after resume would distort the destination's
         * first dirty-rate sample and is not what a steady workload does. */
        if (t - t_next > 1000000000L) t_next = t;
        struct timespec at = {.tv_sec = t_next / 1000000000L, .tv_nsec = t_next % 1000000000L};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
    }
}
