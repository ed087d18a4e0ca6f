/* journal.c: the log's durable copy (see journal.h for the layout and why it exists). */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define MAGIC "flowlog-journal\n"
#define MAGIC_LEN 16
#define VERSION 1
#define READ_WINDOW (1u << 20)
#define MIN_CHUNK (64u << 10)
#define MAX_CHUNK (8u << 20)
#define ZERO_BLOCK (64u << 10)
#define DIRECT_BLOCK 4096u /* O_DIRECT alignment: a multiple of any logical block size */

struct fl_journal {
    int fd;
    /* The frames are written through a second descriptor opened O_DIRECT | O_DSYNC: one write
     * that is durable when it returns, in whole blocks, instead of a buffered write and an
     * fdatasync (5-14% faster per flush here: bench/results/2026-12-03-fc024c9/experiments), and
     * the journal stays out of the page cache. -1 where the file system refuses O_DIRECT, and
     * with nosync: then fd writes and fdatasync flushes, as before. */
    int dfd;
    uint8_t *blk;   /* DIRECT_BLOCK-aligned buffer for dfd's writes */
    size_t blk_cap;
    uint8_t tail[DIRECT_BLOCK]; /* the file's bytes of the block holding end, up to end */
    int nosync;
    char *dir, *path;
    uint64_t end;   /* after the last flushed frame */
    uint64_t alloc; /* the file's size: zeros from the last frame up to here */
    struct fl_buf stage;
    uint64_t flushes, bytes;
};

static const uint8_t zeros[ZERO_BLOCK];

/* An I/O failure as the operator should read it: a full disk says so and what to do. */
static int io_error(const struct fl_journal *j, int e, const char *what, struct fl_error *err)
{
    if (e == ENOSPC || e == EDQUOT)
        return fl_error_set(err, FL_EUNAVAILABLE,
                            "%s: the disk holding the data directory %s is full (%s); free space "
                            "and retry",
                            what, j->dir, strerror(e));
    return fl_error_set(err, FL_EUNAVAILABLE, "%s %s: %s", what, j->path, strerror(e));
}

static int write_all(int fd, const void *p, size_t n, uint64_t off)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO;
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n, uint64_t off, size_t *got)
{
    uint8_t *b = p;
    *got = 0;
    while (n > 0) {
        ssize_t r = pread(fd, b, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            break;
        b += r;
        n -= (size_t)r;
        off += (uint64_t)r;
        *got += (size_t)r;
    }
    return 0;
}

static int zero_range(int fd, uint64_t from, uint64_t to)
{
    while (from < to) {
        size_t n = to - from < ZERO_BLOCK ? (size_t)(to - from) : ZERO_BLOCK;
        int rc = write_all(fd, zeros, n, from);
        if (rc != 0)
            return rc;
        from += n;
    }
    return 0;
}

static int sync_fd(const struct fl_journal *j)
{
    if (j->nosync)
        return 0;
    while (fdatasync(j->fd) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

static int write_header(struct fl_journal *j, struct fl_error *err)
{
    uint8_t h[FL_JOURNAL_HEADER] = {0};
    int rc;

    memcpy(h, MAGIC, MAGIC_LEN);
    fl_put_be32(h + MAGIC_LEN, VERSION);
    if ((rc = write_all(j->fd, h, sizeof h, 0)) != 0 || (rc = sync_fd(j)) != 0 ||
        (!j->nosync && (rc = fl_fsync_dir(j->dir)) != 0))
        return io_error(j, rc, "cannot create the journal", err);
    j->alloc = FL_JOURNAL_HEADER;
    return 0;
}

/* A file shorter than its header is a creation cut short if every byte it has is the
 * header's; anything else is not ours to overwrite. */
static int check_header(struct fl_journal *j, struct fl_error *err)
{
    uint8_t h[FL_JOURNAL_HEADER], want[FL_JOURNAL_HEADER] = {0};
    size_t got;
    int rc;

    memcpy(want, MAGIC, MAGIC_LEN);
    fl_put_be32(want + MAGIC_LEN, VERSION);
    if ((rc = read_all(j->fd, h, sizeof h, 0, &got)) != 0)
        return io_error(j, rc, "cannot read the journal", err);
    if (got < sizeof h && memcmp(h, want, got) == 0)
        return write_header(j, err);
    if (got == sizeof h && memcmp(h, MAGIC, MAGIC_LEN) == 0 &&
        fl_get_be32(h + MAGIC_LEN) != VERSION)
        return fl_error_set(err, FL_EINTERNAL,
                            "%s is a journal of version %u; this flowlog reads version %u only",
                            j->path, fl_get_be32(h + MAGIC_LEN), VERSION);
    if (got < sizeof h || memcmp(h, want, sizeof h) != 0)
        return fl_error_set(err, FL_EINTERNAL,
                            "%s is not a flowlog journal (its header does not match); refusing "
                            "to touch it",
                            j->path);
    return 0;
}

int fl_journal_open(struct fl_journal **out, const char *dir, int nosync, int *created,
                    struct fl_error *err)
{
    struct fl_journal *j = calloc(1, sizeof *j);
    struct stat st;
    size_t n = strlen(dir) + sizeof "/journal";
    int rc;

    *out = NULL;
    if (!j)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    j->fd = j->dfd = -1;
    j->nosync = nosync;
    j->dir = strdup(dir);
    j->path = malloc(n);
    if (!j->dir || !j->path) {
        fl_journal_close(j);
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    }
    snprintf(j->path, n, "%s/journal", dir);
    j->fd = open(j->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (j->fd < 0 || fstat(j->fd, &st) != 0) {
        rc = io_error(j, errno, "cannot open the journal", err);
        fl_journal_close(j);
        return rc;
    }
    j->alloc = (uint64_t)st.st_size;
    j->end = FL_JOURNAL_HEADER;
    if (created)
        *created = st.st_size == 0;
    rc = st.st_size == 0 ? write_header(j, err) : check_header(j, err);
    if (rc != 0) {
        fl_journal_close(j);
        return rc;
    }
    if (!nosync)
        j->dfd = open(j->path, O_WRONLY | O_DIRECT | O_DSYNC | O_CLOEXEC); /* -1: buffered */
    *out = j;
    return 0;
}

/* Remember the bytes of the block that holds end (dfd rewrites that block whole, so its first
 * part must be what the file has). */
static int load_tail(struct fl_journal *j)
{
    uint64_t start = j->end & ~(uint64_t)(DIRECT_BLOCK - 1);
    size_t got;
    int rc;

    memset(j->tail, 0, sizeof j->tail);
    if (j->dfd < 0 || j->end == start)
        return 0;
    if ((rc = read_all(j->fd, j->tail, (size_t)(j->end - start), start, &got)) != 0)
        return rc;
    return got == j->end - start ? 0 : EIO;
}

void fl_journal_close(struct fl_journal *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close(j->fd);
    if (j->dfd >= 0)
        close(j->dfd);
    free(j->blk);
    fl_buf_free(&j->stage);
    free(j->dir);
    free(j->path);
    free(j);
}

/* ---- reading ---- */

/* A sliding read window over the file, so that a scan reads in large pieces. */
struct window {
    uint8_t *p;
    size_t cap, len;
    uint64_t off; /* file offset of p[0] */
};

/* Make [off, off+n) available in w; returns 0 (*avail tells how many of the n bytes the file
 * has) or an errno. */
static int window_get(struct fl_journal *j, struct window *w, uint64_t off, size_t n,
                      size_t *avail)
{
    if (off >= w->off && off + n <= w->off + w->len) {
        *avail = n;
        return 0;
    }
    size_t want = n > READ_WINDOW ? n : READ_WINDOW;
    if (want > w->cap) {
        uint8_t *q = realloc(w->p, want);
        if (!q)
            return ENOMEM;
        w->p = q;
        w->cap = want;
    }
    int rc = read_all(j->fd, w->p, want, off, &w->len);
    w->off = off;
    if (rc != 0)
        return rc;
    *avail = w->len < n ? w->len : n;
    return 0;
}

int fl_journal_scan(struct fl_journal *j, uint64_t from, fl_journal_fn fn, void *arg,
                    uint64_t *end, int *damaged, struct fl_error *err)
{
    struct window w = {0};
    uint64_t off = from ? from : FL_JOURNAL_HEADER;
    int io = 0, stop = 0;

    *damaged = 0;
    for (;;) {
        size_t avail;
        uint32_t len;

        if ((io = window_get(j, &w, off, 4, &avail)) != 0)
            break;
        if (avail < 4)
            break; /* the end of the file */
        len = fl_get_be32(w.p + (off - w.off));
        if (len == 0)
            break; /* the zeroed tail */
        if (len > FL_JOURNAL_MAX_RECORD) {
            *damaged = 1;
            break;
        }
        if ((io = window_get(j, &w, off, 4 + (size_t)len, &avail)) != 0)
            break;
        if (avail < 4 + (size_t)len) {
            *damaged = 1;
            break;
        }
        if ((stop = fn(arg, off, w.p + (off - w.off) + 4, len)) != 0)
            break;
        off += 4 + (uint64_t)len;
    }
    free(w.p);
    *end = off;
    if (io != 0)
        return io_error(j, io, "cannot read the journal", err);
    return stop;
}

int fl_journal_read(struct fl_journal *j, uint64_t off, struct fl_buf *out, struct fl_error *err)
{
    uint8_t h[4];
    size_t got;
    uint32_t len;
    int rc;

    out->len = 0;
    if ((rc = read_all(j->fd, h, 4, off, &got)) != 0)
        return io_error(j, rc, "cannot read the journal", err);
    len = got == 4 ? fl_get_be32(h) : 0;
    if (len == 0 || len > FL_JOURNAL_MAX_RECORD)
        return fl_error_set(err, FL_ENOT_FOUND, "no journal frame at offset %llu",
                            (unsigned long long)off);
    if (fl_buf_reserve(out, len) != 0)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    if ((rc = read_all(j->fd, out->p, len, off + 4, &got)) != 0)
        return io_error(j, rc, "cannot read the journal", err);
    if (got != len)
        return fl_error_set(err, FL_ENOT_FOUND, "the journal frame at offset %llu is cut short",
                            (unsigned long long)off);
    out->len = len;
    return 0;
}

/* ---- cutting a torn tail ---- */

/* The offset after the last nonzero byte at or beyond from (from itself if none). */
static int last_nonzero(struct fl_journal *j, uint64_t from, uint64_t *out)
{
    uint8_t *buf = malloc(READ_WINDOW);
    uint64_t off = from;
    int rc = 0;

    *out = from;
    if (!buf)
        return ENOMEM;
    while (off < j->alloc) {
        size_t got;
        if ((rc = read_all(j->fd, buf, READ_WINDOW, off, &got)) != 0 || got == 0)
            break;
        for (size_t i = got; i > 0; i--) {
            if (buf[i - 1]) {
                *out = off + i;
                break;
            }
        }
        off += got;
    }
    free(buf);
    return rc;
}

static int save_tail(struct fl_journal *j, uint64_t from, uint64_t to, struct fl_error *err)
{
    size_t n = strlen(j->dir) + 64;
    char *path = malloc(n);
    uint8_t *buf = malloc(READ_WINDOW);
    int fd = -1, rc = ENOMEM;

    if (!path || !buf)
        goto out;
    snprintf(path, n, "%s/journal.cut-%llu-%lld", j->dir, (unsigned long long)from,
             (long long)time(NULL));
    if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
        rc = errno;
        goto out;
    }
    for (uint64_t off = from; off < to;) {
        size_t want = to - off < READ_WINDOW ? (size_t)(to - off) : READ_WINDOW, got;
        if ((rc = read_all(j->fd, buf, want, off, &got)) != 0)
            goto out;
        if (got == 0)
            break;
        if ((rc = write_all(fd, buf, got, off - from)) != 0)
            goto out;
        off += got;
    }
    rc = fsync(fd) != 0 ? errno : 0;
out:
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        io_error(j, rc, "cannot save the journal's damaged tail before cutting it", err);
    free(path);
    free(buf);
    return rc;
}

int fl_journal_cut(struct fl_journal *j, uint64_t off, uint64_t *saved, struct fl_error *err)
{
    uint64_t last;
    int rc;

    *saved = 0;
    if (off < FL_JOURNAL_HEADER)
        return fl_error_set(err, FL_EINTERNAL, "journal cut at %llu, inside the header",
                            (unsigned long long)off);
    if ((rc = last_nonzero(j, off, &last)) != 0)
        return io_error(j, rc, "cannot read the journal", err);
    if (last > off) {
        if (save_tail(j, off, last, err) != 0)
            return FL_EUNAVAILABLE;
        if ((rc = zero_range(j->fd, off, last)) != 0 || (rc = sync_fd(j)) != 0)
            return io_error(j, rc, "cannot cut the journal's damaged tail", err);
        *saved = last - off;
    }
    j->end = off;
    if ((rc = load_tail(j)) != 0)
        return io_error(j, rc, "cannot read the journal", err);
    return 0;
}

/* ---- writing ---- */

int fl_journal_stage(struct fl_journal *j, const void *rec, size_t len, struct fl_error *err)
{
    if (len == 0 || len > FL_JOURNAL_MAX_RECORD)
        return fl_error_set(err, FL_EINTERNAL, "a record of %zu bytes does not fit the journal",
                            len);
    if (fl_buf_add_be32(&j->stage, (uint32_t)len) != 0 || fl_buf_add(&j->stage, rec, len) != 0)
        return fl_error_set(err, FL_EINTERNAL, "out of memory staging a journal record");
    return 0;
}

size_t fl_journal_staged(const struct fl_journal *j)
{
    return j->stage.len;
}

void fl_journal_unstage(struct fl_journal *j, size_t mark)
{
    if (mark < j->stage.len)
        j->stage.len = mark;
}

/* Keep zeros ahead of the writes, in chunks that grow with the file (an eighth of it, 64 KiB
 * to 8 MiB): a flush then overwrites blocks the file already has. */
static int extend(struct fl_journal *j, uint64_t need)
{
    uint64_t chunk = j->alloc / 8;
    int rc;

    if (need <= j->alloc)
        return 0;
    chunk = chunk < MIN_CHUNK ? MIN_CHUNK : chunk > MAX_CHUNK ? MAX_CHUNK : chunk;
    chunk &= ~(uint64_t)(DIRECT_BLOCK - 1); /* whole blocks: direct writes never grow the file */
    uint64_t to = (need + chunk - 1) / chunk * chunk;
    if ((rc = zero_range(j->fd, j->alloc, to)) != 0) {
        /* Give back what was added, so a disk that filled up mid-way keeps its last blocks
         * for other files; if even that fails, the extra zeros are harmless. */
        if (ftruncate(j->fd, (off_t)j->alloc) != 0)
            rc = rc ? rc : errno;
        return rc;
    }
    j->alloc = to;
    return 0;
}

/* Write [end, end + n) of the staged frames through dfd: from the start of end's block, the
 * tail bytes the file already has, the frames, zeros to the next block boundary (the file beyond
 * the end is zeros anyway). A crash during the write can tear it only at sector boundaries; the
 * sectors before end hold the same bytes either way. Returns 0 or an errno. */
static int write_direct(struct fl_journal *j, const uint8_t *p, size_t n)
{
    uint64_t start = j->end & ~(uint64_t)(DIRECT_BLOCK - 1);
    size_t head = (size_t)(j->end - start);
    size_t len = (head + n + DIRECT_BLOCK - 1) & ~(size_t)(DIRECT_BLOCK - 1);

    if (len > j->blk_cap) {
        void *q = NULL;
        size_t cap = j->blk_cap ? j->blk_cap : 64u << 10;
        while (cap < len)
            cap *= 2;
        if (posix_memalign(&q, DIRECT_BLOCK, cap) != 0)
            return ENOMEM;
        free(j->blk);
        j->blk = q;
        j->blk_cap = cap;
    }
    memcpy(j->blk, j->tail, head);
    memcpy(j->blk + head, p, n);
    memset(j->blk + head + n, 0, len - head - n);
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(j->dfd, j->blk + done, len - done, (off_t)(start + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0 || (size_t)w % DIRECT_BLOCK != 0)
            return EIO; /* a direct write that stops mid-block: treat as failed */
        done += (size_t)w;
    }
    size_t keep = (size_t)((j->end + n) & (DIRECT_BLOCK - 1));
    memset(j->tail, 0, sizeof j->tail);
    memcpy(j->tail, j->blk + (len - DIRECT_BLOCK), keep);
    return 0;
}

/* Take the staged frames for a write at the end: *n gets their length (0: none staged). The
 * file is first extended in zeroed whole blocks ahead of them (so that no later direct write
 * grows it), and the new zeros are flushed: otherwise the write landing on them would also have
 * to allocate their blocks and commit the file system's journal. */
static int stage_take(struct fl_journal *j, size_t *n, struct fl_error *err)
{
    uint64_t need;
    int rc;

    *n = j->stage.len;
    if (*n == 0)
        return 0;
    j->stage.len = 0;
    need = j->dfd >= 0 ? (j->end + *n + DIRECT_BLOCK - 1) & ~(uint64_t)(DIRECT_BLOCK - 1)
                       : j->end + *n;
    if (need > j->alloc && ((rc = extend(j, need)) != 0 || (rc = sync_fd(j)) != 0))
        return io_error(j, rc, "cannot extend the journal", err);
    return 0;
}

/* n bytes p were just written at the end through fd: keep tail, the bytes of the block that
 * will hold the end, as the file has them (a direct flush rewrites that block whole from it),
 * without reading them back. */
static void tail_advance(struct fl_journal *j, const uint8_t *p, size_t n)
{
    uint64_t start = j->end & ~(uint64_t)(DIRECT_BLOCK - 1);
    uint64_t end = j->end + n, nstart = end & ~(uint64_t)(DIRECT_BLOCK - 1);

    if (nstart == start) { /* still the same block: the new bytes follow the old */
        memcpy(j->tail + (j->end - start), p, n);
        return;
    }
    memset(j->tail, 0, sizeof j->tail);
    memcpy(j->tail, p + (nstart - j->end), (size_t)(end - nstart));
}

/* A write of n staged bytes at the end failed: nothing of it counts. Zero what may have reached
 * the file, so that no partial frame lingers past the end (best effort; a later scan cuts it
 * otherwise). */
static int write_failed(struct fl_journal *j, size_t n, int rc, struct fl_error *err)
{
    (void)zero_range(j->fd, j->end, j->end + n);
    (void)load_tail(j);
    return io_error(j, rc, "cannot write the journal", err);
}

int fl_journal_flush(struct fl_journal *j, struct fl_error *err)
{
    size_t n;
    int rc;

    if ((rc = stage_take(j, &n, err)) != 0 || n == 0)
        return rc;
    if (j->dfd >= 0)
        rc = write_direct(j, j->stage.p, n);
    else if ((rc = write_all(j->fd, j->stage.p, n, j->end)) == 0)
        rc = sync_fd(j);
    if (rc != 0)
        return write_failed(j, n, rc, err);
    j->end += n;
    __atomic_fetch_add(&j->flushes, 1, __ATOMIC_RELAXED);
    j->bytes += n;
    return 0;
}

int fl_journal_write(struct fl_journal *j, struct fl_error *err)
{
    size_t n;
    int rc;

    if ((rc = stage_take(j, &n, err)) != 0 || n == 0)
        return rc;
    if ((rc = write_all(j->fd, j->stage.p, n, j->end)) != 0)
        return write_failed(j, n, rc, err);
    tail_advance(j, j->stage.p, n);
    j->end += n;
    j->bytes += n;
    return 0;
}

int fl_journal_undo(struct fl_journal *j, uint64_t to, struct fl_error *err)
{
    int rc;

    if (to > j->end || to < FL_JOURNAL_HEADER)
        return fl_error_set(err, FL_EINTERNAL, "journal undo to %llu past its end %llu",
                            (unsigned long long)to, (unsigned long long)j->end);
    if ((rc = zero_range(j->fd, to, j->end)) != 0 || (rc = sync_fd(j)) != 0)
        return io_error(j, rc, "cannot take back a journal write", err);
    j->end = to;
    if ((rc = load_tail(j)) != 0)
        return io_error(j, rc, "cannot read the journal", err);
    return 0;
}

int fl_journal_sync(struct fl_journal *j, struct fl_error *err)
{
    int rc = sync_fd(j);
    if (rc != 0)
        return io_error(j, rc, "cannot flush the journal", err);
    /* Counted atomically: a pipelined store syncs on a thread of its own while another writes. */
    __atomic_fetch_add(&j->flushes, 1, __ATOMIC_RELAXED);
    return 0;
}

uint64_t fl_journal_end(const struct fl_journal *j)
{
    return j->end;
}

uint64_t fl_journal_flushes(const struct fl_journal *j)
{
    return __atomic_load_n(&j->flushes, __ATOMIC_RELAXED);
}

uint64_t fl_journal_bytes(const struct fl_journal *j)
{
    return j->bytes;
}

int fl_journal_copy(struct fl_journal *j, const char *path, uint64_t end, struct fl_error *err)
{
    uint8_t *buf = malloc(READ_WINDOW);
    int fd, rc = 0;

    if (!buf)
        return fl_error_set(err, FL_EINTERNAL, "out of memory");
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = errno;
        goto out;
    }
    for (uint64_t off = 0; off < end;) {
        size_t want = end - off < READ_WINDOW ? (size_t)(end - off) : READ_WINDOW, got;
        if ((rc = read_all(j->fd, buf, want, off, &got)) != 0)
            goto out;
        if (got == 0) {
            rc = EIO;
            goto out;
        }
        if ((rc = write_all(fd, buf, got, off)) != 0)
            goto out;
        off += got;
    }
    if (fsync(fd) != 0)
        rc = errno;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    if (rc != 0)
        return io_error(j, rc, "cannot copy the journal to the backup", err);
    return 0;
}
