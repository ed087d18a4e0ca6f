/* test_prefault.c: the thread that readies the pages past the end of the store's data
 * (prefault.h). It makes ready exactly the pages after LMDB's last used one, up to its bound
 * and never past the map (a touch past the file's end would be SIGBUS); it never changes a
 * byte; after fl_prefault_pause it keeps out of the map (unmapped here: a touch would be
 * SIGSEGV); it follows a remap and a frontier that moves on, and does a list of pages (LMDB's
 * free ones) first. A store reports its count in stats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "prefault.h"
#include "store_int.h"
#include "testutil.h"

#define PAGE 4096

struct map {
    char *dir, *path;
    int fd;
    char *addr;
    size_t size;
};

/* A file of npages pages, page i filled with (i * 7 + 1) & 0xff, mapped shared. */
static void map_open(struct map *m, size_t npages)
{
    m->dir = tu_tmpdir();
    size_t n = strlen(m->dir) + 16;
    m->path = malloc(n);
    assert_non_null(m->path);
    snprintf(m->path, n, "%s/data", m->dir);
    m->fd = open(m->path, O_RDWR | O_CREAT, 0600);
    assert_true(m->fd >= 0);
    m->size = npages * PAGE;
    char page[PAGE];
    for (size_t i = 0; i < npages; i++) {
        memset(page, (int)((i * 7 + 1) & 0xff), PAGE);
        assert_int_equal(write(m->fd, page, PAGE), PAGE);
    }
    m->addr = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
    assert_true(m->addr != MAP_FAILED);
}

static void map_check_unchanged(const struct map *m)
{
    for (size_t i = 0; i < m->size / PAGE; i++)
        for (size_t j = 0; j < PAGE; j += 511)
            if ((unsigned char)m->addr[i * PAGE + j] != ((i * 7 + 1) & 0xff))
                fail_msg("page %zu byte %zu changed", i, j);
}

static void map_close(struct map *m)
{
    if (m->addr)
        munmap(m->addr, m->size);
    close(m->fd);
    tu_rmdir(m->dir);
    free(m->dir);
    free(m->path);
}

/* Wait (at most 10 s) until the thread has nothing left to do; returns its count then. Waiting
 * for the thread's own word rather than for a pause in the count keeps a thread descheduled on
 * a loaded machine (300 ms were seen, between two batches) from looking finished, and the count
 * it returns is exact: every check below is of all the pages made ready, not one more. */
static uint64_t settled(struct fl_prefault *p)
{
    for (int i = 0; i < 1000 && !fl_prefault_idle(p); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (!fl_prefault_idle(p))
        fail_msg("the prefault thread is still busy after 10 s (%llu pages made ready)",
                 (unsigned long long)fl_prefault_pages(p));
    return fl_prefault_pages(p);
}

/* A small map: every page after the last used one is made ready, and not one more. */
static void test_stops_at_map_end(void **state)
{
    (void)state;
    struct map m;
    struct fl_prefault *p;

    map_open(&m, 256);
    assert_int_equal(fl_prefault_start(&p, PAGE), 0);
    assert_int_equal(fl_prefault_pages(p), 0); /* no map yet */
    fl_prefault_map(p, m.addr, m.size, 10);
    assert_int_equal(settled(p), 256 - 11);
    fl_prefault_note(p, 200); /* nothing more to do: the map ends at 256 */
    assert_int_equal(settled(p), 256 - 11);
    fl_prefault_stop(p);
    map_check_unchanged(&m);
    map_close(&m);
}

/* A large map: a bounded run of pages ahead of the frontier, which moves on with the notes. */
static void test_keeps_ahead(void **state)
{
    (void)state;
    struct map m;
    struct fl_prefault *p;

    map_open(&m, 16384);
    assert_int_equal(fl_prefault_start(&p, PAGE), 0);
    fl_prefault_map(p, m.addr, m.size, 0);
    uint64_t ahead = settled(p);
    assert_true(ahead > 0 && ahead < 16384 - 1);
    fl_prefault_note(p, 1); /* a step too small to wake the thread */
    assert_int_equal(settled(p), ahead);
    fl_prefault_note(p, ahead); /* LMDB used them all: the same run again, after them */
    assert_int_equal(settled(p), 2 * ahead);
    fl_prefault_note(p, 16000); /* near the end: only what is left */
    assert_int_equal(settled(p), 2 * ahead + (16384 - 16001));
    fl_prefault_stop(p);
    map_check_unchanged(&m);
    map_close(&m);
}

/* Paused, the thread stays out: the map is unmapped, then mapped again elsewhere and larger. */
static void test_pause_and_remap(void **state)
{
    (void)state;
    struct map m;
    struct fl_prefault *p;

    map_open(&m, 4096);
    assert_int_equal(fl_prefault_start(&p, PAGE), 0);
    fl_prefault_map(p, m.addr, m.size, 0);
    fl_prefault_pause(p);
    uint64_t before = fl_prefault_pages(p);
    assert_int_equal(munmap(m.addr, m.size), 0);
    m.addr = NULL;
    fl_prefault_note(p, 3000); /* paused: no map to work on */
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_int_equal(fl_prefault_pages(p), before);
    /* grow the file and map it again, as a remap does */
    char page[PAGE];
    for (size_t i = 4096; i < 8192; i++) {
        memset(page, (int)((i * 7 + 1) & 0xff), PAGE);
        assert_int_equal(pwrite(m.fd, page, PAGE, (off_t)(i * PAGE)), PAGE);
    }
    m.size = 8192 * PAGE;
    m.addr = mmap(NULL, m.size, PROT_READ | PROT_WRITE, MAP_SHARED, m.fd, 0);
    assert_true(m.addr != MAP_FAILED);
    fl_prefault_map(p, m.addr, m.size, 8000);
    assert_int_equal(settled(p), before + (8192 - 8001));
    fl_prefault_stop(p);
    map_check_unchanged(&m);
    map_close(&m);
}

/* A list of pages (LMDB's free ones) is made ready first, in its order; pages past the map are
 * skipped; a new list replaces one not yet done; the list waits while the thread is paused. */
static void test_list(void **state)
{
    (void)state;
    struct map m;
    struct fl_prefault *p;

    map_open(&m, 512);
    assert_int_equal(fl_prefault_start(&p, PAGE), 0);
    fl_prefault_map(p, m.addr, m.size, 511); /* nothing past the last used page */
    uint64_t *l = malloc(6 * sizeof *l);
    assert_non_null(l);
    l[0] = 3, l[1] = 4, l[2] = 5, l[3] = 100, l[4] = 600, l[5] = 1u << 30;
    fl_prefault_list(p, l, 6);
    assert_int_equal(settled(p), 4);
    fl_prefault_pause(p);
    l = malloc(300 * sizeof *l);
    assert_non_null(l);
    for (int i = 0; i < 300; i++)
        l[i] = (uint64_t)i;
    fl_prefault_list(p, l, 300);
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_int_equal(fl_prefault_pages(p), 4); /* paused */
    fl_prefault_map(p, m.addr, m.size, 511);
    assert_int_equal(settled(p), 304);
    fl_prefault_list(NULL, malloc(8), 1); /* no thread: the list is freed, nothing else */
    fl_prefault_stop(p);
    map_check_unchanged(&m);
    map_close(&m);
}

/* The store's count in stats once its thread has nothing left to do (at most 10 s). */
static uint64_t store_settled(struct fl_store *s)
{
    assert_non_null(s->pf);
    settled(s->pf);
    return tu_stat_u64(s, "pages_prefaulted");
}

/* A store readies its pages as it grows, and says so in stats; a rebuild hands over the pages
 * its drop freed (the map is large enough that nothing remaps, and the rebuild grows the data
 * by far fewer pages than wake the thread for the frontier: what it readies is the free list). */
static void test_store_counts_pages(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    struct fl_store_opts o = {.dir = dir, .nosync = 1, .map_size = 64u << 20};
    struct fl_store *s = NULL;
    struct fl_error err;
    uint64_t events = 0;

    fl_error_clear(&err);
    assert_int_equal(fl_store_open(&s, &o, &err), 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(tu_appendf(s, "t", &err,
                                    "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"f%d\","
                                    "\"flow_name\":\"%0500d\"}}",
                                    i, i),
                         0);
    uint64_t before = store_settled(s);
    assert_true(before > 0);
    uint64_t used = tu_stat_u64(s, "pages_used");
    assert_int_equal(fl_store_rebuild(s, &events, &err), 0);
    assert_int_equal(events, 200);
    assert_true(tu_stat_u64(s, "pages_used") < used + 256); /* no frontier wake-up */
    uint64_t after = store_settled(s);
    if (after <= before)
        fail_msg("a rebuild's freed pages were not made ready: %llu pages before, %llu after",
                 (unsigned long long)before, (unsigned long long)after);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stops_at_map_end),   cmocka_unit_test(test_keeps_ahead),
        cmocka_unit_test(test_pause_and_remap),    cmocka_unit_test(test_list),
        cmocka_unit_test(test_store_counts_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
