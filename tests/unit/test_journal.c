/* test_journal.c: the journal that makes commits durable, and recovery from it at open:
 * a torn or damaged tail is cut (and saved), records the journal has beyond LMDB's head are
 * applied (with map growth), an OS crash (another boot's DIR/running) rebuilds LMDB from the
 * journal alone, a missing, truncated or foreign journal is refused with a message, verify
 * compares journal and log, and a backup carries the journal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "journal.h"
#include "testutil.h"

#define T "t"
#define FLOWS 5

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static struct fl_store *open_opts(const char *dir, size_t map, struct fl_error *e)
{
    struct fl_store_opts o = {.dir = dir, .map_size = map};
    struct fl_store *s = NULL;

    fl_error_clear(e);
    if (fl_store_open(&s, &o, e) != 0)
        return NULL;
    return s;
}

/* Append n rounds of events over FLOWS flows (registered in round 0 if first). */
static void fill(struct fl_store *s, int from, int n)
{
    struct fl_error e;
    for (int i = from; i < from + n; i++) {
        for (int f = 0; f < FLOWS; f++) {
            int rc = i == 0 ? tu_appendf(s, T, &e,
                                         "{\"type\":\"flow_registered\",\"event_id\":\"r%d\","
                                         "\"data\":{\"flow_id\":\"f%d\",\"flow_name\":\"n\"}}",
                                         f, f)
                            : tu_appendf(s, T, &e,
                                         "{\"type\":\"flow_updated\",\"event_id\":\"u%d-%d\","
                                         "\"data\":{\"flow_id\":\"f%d\",\"owner\":\"o%d\"}}",
                                         i, f, f, i);
            if (rc != 0)
                fail_msg("append: %s", e.msg);
        }
    }
}

/* The states of every flow, as raw bytes joined, to compare stores exactly. */
static char *snapshot(struct fl_store *s, size_t *len)
{
    char *all = NULL;
    size_t n = 0;
    for (int f = 0; f < FLOWS; f++) {
        char flow[16];
        size_t l;
        int rc;
        snprintf(flow, sizeof flow, "f%d", f);
        char *raw = tu_state_raw(s, T, flow, 0, &l, &rc);
        assert_int_equal(rc, 0);
        all = realloc(all, n + l);
        memcpy(all + n, raw, l);
        n += l;
        free(raw);
    }
    *len = n;
    return all;
}

/* The journal's end: the offset after its last frame, found by walking the frames. */
static off_t journal_end(const char *dir)
{
    char *p = path_in(dir, "journal");
    int fd = open(p, O_RDONLY);
    off_t off = FL_JOURNAL_HEADER;
    uint8_t h[4];

    assert_true(fd >= 0);
    while (pread(fd, h, 4, off) == 4) {
        uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (len == 0)
            break;
        off += 4 + (off_t)len;
    }
    close(fd);
    free(p);
    return off;
}

static void write_at(const char *dir, const char *name, off_t off, const void *b, size_t n)
{
    char *p = path_in(dir, name);
    int fd = open(p, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, n, off), (ssize_t)n);
    close(fd);
    free(p);
}

static int count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    assert_non_null(d);
    while ((de = readdir(d)))
        n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t n;
    assert_non_null(a);
    assert_non_null(b);
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        assert_int_equal(fwrite(buf, 1, n, b), n);
    fclose(a);
    fclose(b);
}

/* A flush cut short leaves a partial frame: the next open cuts it, keeps its bytes in a
 * journal.cut-* file, and appends go on from the last whole record. */
static void test_torn_tail_is_cut(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = tu_open(dir, 1);
    uint8_t torn[100];
    struct fl_error e;

    (void)state;
    fill(s, 0, 3);
    fl_store_close(s);
    off_t end = journal_end(dir);
    memset(torn, 0xab, sizeof torn);
    torn[0] = 0, torn[1] = 0, torn[2] = 2, torn[3] = 0; /* declares 512 bytes, has 96 */
    write_at(dir, "journal", end, torn, sizeof torn);

    s = open_opts(dir, 0, &e);
    assert_non_null(s);
    assert_int_equal(fl_store_head(s), 3 * FLOWS);
    assert_int_equal(count_files(dir, "journal.cut-"), 1);
    assert_int_equal(journal_end(dir), end);
    tu_verify_ok(s);
    fill(s, 3, 1);
    assert_int_equal(fl_store_head(s), 4 * FLOWS);
    tu_verify_ok(s);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* A whole frame whose record fails its checksum, at the end, is a torn write too. */
static void test_bad_last_record_is_cut(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = tu_open(dir, 1);
    struct fl_error e;

    (void)state;
    fill(s, 0, 2);
    fl_store_close(s);
    off_t end = journal_end(dir);
    uint8_t frame[40] = {0, 0, 0, 36};
    memset(frame + 4, 0x5a, 36);
    write_at(dir, "journal", end, frame, sizeof frame);
    s = open_opts(dir, 0, &e);
    assert_non_null(s);
    assert_int_equal(fl_store_head(s), 2 * FLOWS);
    assert_int_equal(count_files(dir, "journal.cut-"), 1);
    tu_verify_ok(s);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* A crash between the journal flush and the LMDB commit: the journal holds records LMDB does
 * not. Made here by pairing an older LMDB file (a backup) with a newer journal; the open
 * applies the missing records, in a map too small for them (growth during recovery). */
static void test_journal_ahead_is_applied(void **state)
{
    char *dir = tu_tmpdir(), *bak = path_in(dir, "bak"), *data = path_in(dir, "data");
    struct fl_store *s = tu_open(data, 1);
    struct fl_error e;
    uint64_t bytes, head;
    size_t la, lb;

    (void)state;
    fill(s, 0, 2);
    assert_int_equal(fl_store_backup(s, bak, &bytes, &head, &e), 0);
    assert_int_equal(head, 2 * FLOWS);
    fill(s, 2, 200);
    char *want = snapshot(s, &la);
    uint64_t want_head = fl_store_head(s);
    fl_store_close(s);

    char *from = path_in(data, "journal"), *to = path_in(bak, "journal");
    copy_file(from, to);
    s = open_opts(bak, 64 * 1024, &e);
    if (!s)
        fail_msg("open: %s", e.msg);
    assert_int_equal(fl_store_head(s), want_head);
    /* The records applied were copied in, never flushed by this store: open flushes them
     * before anything is read (nothing else flushes the journal until an append). */
    assert_true(tu_stat_u64(s, "journal_flushes") >= 1);
    char *got = snapshot(s, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(want, got, la);
    tu_verify_ok(s);
    assert_int_equal(count_files(bak, "journal.cut-"), 0);
    fl_store_close(s);
    free(want);
    free(got);
    free(from);
    free(to);
    free(bak);
    free(data);
    tu_rmdir(dir);
    free(dir);
}

/* An unclean stop in another boot (an OS crash): the LMDB file is set aside unread, even when
 * it is garbage, and everything is rebuilt from the journal. */
static void test_os_crash_rebuilds_from_journal(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = tu_open(dir, 1);
    struct fl_error e;
    size_t la, lb;

    (void)state;
    fill(s, 0, 20);
    char *want = snapshot(s, &la);
    uint64_t want_head = fl_store_head(s);
    fl_store_close(s);
    const char other[] = "00000000-0000-0000-0000-000000000000\n";
    char *running = path_in(dir, "running");
    FILE *f = fopen(running, "w");
    assert_non_null(f);
    fputs(other, f);
    fclose(f);
    uint8_t junk[8192];
    memset(junk, 0x77, sizeof junk);
    write_at(dir, "data.mdb", 0, junk, sizeof junk); /* both meta pages destroyed */

    s = open_opts(dir, 0, &e);
    if (!s)
        fail_msg("open: %s", e.msg);
    assert_int_equal(fl_store_head(s), want_head);
    char *got = snapshot(s, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(want, got, la);
    assert_int_equal(count_files(dir, "data.mdb.suspect"), 1);
    tu_verify_ok(s);
    fill(s, 20, 1);
    tu_verify_ok(s);
    fl_store_close(s);
    /* a clean close leaves no running mark */
    assert_int_equal(access(running, F_OK), -1);
    free(running);
    free(want);
    free(got);
    tu_rmdir(dir);
    free(dir);
}

/* A journal that lost records LMDB has, no journal, or somebody else's file: refused. */
static void test_bad_journals_are_refused(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = tu_open(dir, 1);
    char *jp = path_in(dir, "journal");
    struct fl_error e;

    (void)state;
    fill(s, 0, 2);
    fl_store_close(s);
    off_t end = journal_end(dir);

    assert_int_equal(truncate(jp, end - 10), 0);
    assert_null(open_opts(dir, 0, &e));
    assert_non_null(strstr(e.msg, "does not hold seq 10"));

    assert_int_equal(unlink(jp), 0);
    assert_null(open_opts(dir, 0, &e));
    assert_non_null(strstr(e.msg, "no journal"));
    assert_int_equal(access(jp, F_OK), -1); /* the refused open left nothing behind */

    FILE *f = fopen(jp, "w");
    assert_non_null(f);
    fputs("hello, I am not a journal, but I am long enough to look like one maybe", f);
    fclose(f);
    assert_null(open_opts(dir, 0, &e));
    assert_non_null(strstr(e.msg, "not a flowlog journal"));
    free(jp);
    tu_rmdir(dir);
    free(dir);
}

/* verify reads the journal too: a record changed there (where no checksum of LMDB's sees it)
 * is named. */
static void test_verify_compares_journal(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = tu_open(dir, 1);

    (void)state;
    fill(s, 0, 2);
    uint8_t b = 0xff;
    write_at(dir, "journal", FL_JOURNAL_HEADER + 4 + 20, &b, 1); /* inside seq 1's record */
    json_t *v = tu_verify(s);
    assert_true(json_is_false(json_object_get(v, "ok")));
    char *p = json_dumps(json_object_get(v, "problems"), 0);
    assert_non_null(strstr(p, "seq 1: the log's record differs from the journal's copy"));
    free(p);
    json_decref(v);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* ---- the journal module alone: frames of every size through flushes and undos ---- */

struct frames {
    uint8_t **p;
    size_t *len, n, cap;
    size_t seen; /* frames checked by the scan */
    int bad;
};

static int frames_check(void *arg, uint64_t off, const uint8_t *rec, size_t len)
{
    struct frames *f = arg;

    (void)off;
    if (f->seen >= f->n || f->len[f->seen] != len || memcmp(f->p[f->seen], rec, len) != 0)
        f->bad = 1;
    f->seen++;
    return f->bad;
}

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Flushes of 1..40 frames of 1..9,000 bytes (so writes start and end anywhere in a block, and
 * span several), with now and then the last flush taken back as after a failed LMDB commit;
 * reopened (with the store's cut at the end), the journal holds exactly the frames kept, and
 * nothing past them. Seeded; the seed is printed on failure. */
static void test_frames_of_every_size(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_journal *j;
    struct fl_error e;
    struct frames f = {0};
    uint64_t seed = tu_seed(), x, end, scanned, saved;
    uint8_t *buf = malloc(9000);
    int created, damaged;

    (void)state;
    x = seed * 0x9e3779b97f4a7c15ull | 1; /* xorshift needs a nonzero state */
    assert_non_null(buf);
    assert_int_equal(fl_journal_open(&j, dir, 0, &created, &e), 0);
    assert_true(created);
    for (int round = 0; round < 300; round++) {
        uint64_t before = fl_journal_end(j);
        size_t first = f.n, k = 1 + rng_next(&x) % 40;
        for (size_t i = 0; i < k; i++) {
            size_t len = 1 + rng_next(&x) % 9000;
            for (size_t b = 0; b < len; b++)
                buf[b] = (uint8_t)rng_next(&x);
            assert_int_equal(fl_journal_stage(j, buf, len, &e), 0);
            if (f.n == f.cap) {
                f.cap = f.cap ? 2 * f.cap : 256;
                f.p = realloc(f.p, f.cap * sizeof *f.p);
                f.len = realloc(f.len, f.cap * sizeof *f.len);
                assert_true(f.p && f.len);
            }
            f.p[f.n] = malloc(len);
            memcpy(f.p[f.n], buf, len);
            f.len[f.n++] = len;
        }
        if (fl_journal_flush(j, &e) != 0)
            fail_msg("seed %llu: flush: %s", (unsigned long long)seed, e.msg);
        if (rng_next(&x) % 8 == 0) {
            assert_int_equal(fl_journal_undo(j, before, &e), 0);
            while (f.n > first)
                free(f.p[--f.n]);
        }
    }
    end = fl_journal_end(j);
    fl_journal_close(j);

    assert_int_equal(fl_journal_open(&j, dir, 0, &created, &e), 0);
    assert_false(created);
    assert_int_equal(fl_journal_scan(j, 0, frames_check, &f, &scanned, &damaged, &e), 0);
    if (f.bad || f.seen != f.n || damaged || scanned != end)
        fail_msg("seed %llu (FLOWLOG_SEED=%llu to repeat): %zu of %zu frames read back, bad %d, "
                 "damaged %d, end %llu of %llu",
                 (unsigned long long)seed, (unsigned long long)seed, f.seen, f.n, f.bad, damaged,
                 (unsigned long long)scanned, (unsigned long long)end);
    assert_int_equal(fl_journal_cut(j, end, &saved, &e), 0);
    assert_int_equal(saved, 0); /* zeros only beyond the last frame */
    fl_journal_close(j);
    for (size_t i = 0; i < f.n; i++)
        free(f.p[i]);
    free(f.p);
    free(f.len);
    free(buf);
    tu_rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torn_tail_is_cut),
        cmocka_unit_test(test_bad_last_record_is_cut),
        cmocka_unit_test(test_journal_ahead_is_applied),
        cmocka_unit_test(test_os_crash_rebuilds_from_journal),
        cmocka_unit_test(test_bad_journals_are_refused),
        cmocka_unit_test(test_verify_compares_journal),
        cmocka_unit_test(test_frames_of_every_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
