/* pipeline: many requests in flight on one libflowlog connection, every answer matched by id.
 *
 * usage: pipeline SERVER TOKEN N
 * Sends N single-event appends (every 97th a duplicate registration, which must fail with
 * already_exists) and a ping every 100 requests, all without waiting, with a synchronous log
 * read in the middle; then collects every reply with flc_reply_next. Prints "ok - ..." /
 * "not ok - ..." lines (unnumbered TAP; the calling script numbers them) and "# ..." notes. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowlog.h"
#include "testreq.h"

/* What one request was and what came back. */
struct req {
    uint64_t id;
    int kind;     /* 0: append expected to succeed, 1: append expected to fail, 2: ping */
    int answered; /* times a reply carried this id */
    int ok;
    int code;
    uint64_t seq;
};

struct run {
    flc_client *c;
    struct req *reqs;
    size_t n, nreqs;
    int failures;
};

/* Print one unnumbered TAP line. */
static void tap(struct run *r, int good, const char *what)
{
    printf("%sok - %s\n", good ? "" : "not ", what);
    if (!good)
        r->failures++;
}

/* Pack event i: a registration of flow p-i, or (bad) of flow p-0 again. */
static void pack_event(msgpack_sbuffer *sb, size_t i, int bad)
{
    char id[64];

    snprintf(id, sizeof id, "p-%zu", bad ? (size_t)0 : i);
    testreq_pack_registration(sb, id, "pipelined.xml", NULL);
}

/* Send appends from..to-1 (and a ping after every 100th) without waiting. */
static int send_range(struct run *r, size_t from, size_t to)
{
    msgpack_sbuffer sb;
    int rc = 0;

    msgpack_sbuffer_init(&sb);
    for (size_t i = from; i < to && rc == 0; i++) {
        struct req *q = &r->reqs[r->nreqs++];
        q->kind = i > 0 && i % 97 == 0;
        pack_event(&sb, i, q->kind);
        struct flc_event ev = {sb.data, sb.size};
        if ((q->id = flc_append_send(r->c, &ev, 1)) == 0)
            rc = -1;
        if (rc == 0 && i % 100 == 99) {
            q = &r->reqs[r->nreqs++];
            q->kind = 2;
            if ((q->id = flc_ping_send(r->c)) == 0)
                rc = -1;
        }
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0)
        printf("# send failed: %s: %s\n", flc_errname(r->c), flc_errmsg(r->c));
    return rc;
}

/* The request with this id, or NULL. */
static struct req *find(struct run *r, uint64_t id)
{
    for (size_t i = 0; i < r->nreqs; i++)
        if (r->reqs[i].id == id)
            return &r->reqs[i];
    return NULL;
}

/* Record one reply. */
static int record(struct run *r, uint64_t id, const msgpack_object *res)
{
    struct req *q = find(r, id);
    const msgpack_object *results, *seq;

    if (!q) {
        printf("# a reply with an id never sent: %" PRIu64 "\n", id);
        return -1;
    }
    q->answered++;
    q->ok = res != NULL;
    q->code = res ? 0 : flc_errcode(r->c);
    if (res && q->kind == 0) {
        results = flc_get(res, "results");
        seq = results && results->type == MSGPACK_OBJECT_ARRAY && results->via.array.size == 1
                  ? flc_get(&results->via.array.ptr[0], "seq")
                  : NULL;
        if (!seq || seq->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return -1;
        q->seq = seq->via.u64;
    }
    return 0;
}

/* Collect every pending reply. */
static int collect(struct run *r)
{
    uint64_t id;
    const msgpack_object *res;
    int rc;

    while (flc_pending(r->c) > 0) {
        if ((rc = flc_reply_next(r->c, 30000, &id, &res)) != 1) {
            printf("# collecting stopped: %d %s: %s\n", rc, flc_errname(r->c), flc_errmsg(r->c));
            return -1;
        }
        if (record(r, id, res) != 0)
            return -1;
    }
    return 0;
}

/* Compare u64 for qsort. */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Check the outcome of every request. */
static void judge(struct run *r)
{
    size_t once = 0, good = 0, bad_ok = 0, pings = 0, nseq = 0, ordered = 1;
    uint64_t *seqs = calloc(r->nreqs + 1, sizeof *seqs), last = 0;

    for (size_t i = 0; i < r->nreqs; i++) {
        struct req *q = &r->reqs[i];
        once += q->answered == 1;
        if (q->kind == 0 && q->ok) {
            good++;
            seqs[nseq++] = q->seq;
            ordered &= q->seq > last;
            last = q->seq;
        }
        bad_ok += q->kind == 1 && !q->ok && q->code == FLC_EALREADY_EXISTS;
        pings += q->kind == 2 && q->ok;
    }
    size_t nbad = (r->n - 1) / 97, nping = r->n / 100;
    printf("# %zu requests: %zu appends ok, %zu refused as expected, %zu pings\n", r->nreqs, good,
           bad_ok, pings);
    tap(r, once == r->nreqs, "every request answered exactly once, matched by id");
    tap(r, good == r->n - nbad, "every good append acknowledged");
    tap(r, bad_ok == nbad, "every bad append refused with already_exists, the others unaffected");
    tap(r, pings == nping, "pings in the pipeline answered");
    qsort(seqs, nseq, sizeof *seqs, cmp_u64);
    int distinct = 1;
    for (size_t i = 1; i < nseq; i++)
        distinct &= seqs[i] == seqs[i - 1] + 1;
    tap(r, nseq > 0 && distinct, "the acknowledged seqs are distinct and contiguous");
    printf("# seqs %s the order the appends were sent in\n", ordered ? "follow" : "do not follow");
    free(seqs);
}

/* Half the appends, a synchronous read among them, the other half, then collect. */
int main(int argc, char **argv)
{
    struct run r = {0};
    struct flc_query q = {.from = 1, .limit = 1};
    const msgpack_object *page;
    int rc;

    if (argc != 4 || (r.n = strtoul(argv[3], NULL, 10)) < 200) {
        fprintf(stderr, "usage: pipeline SERVER TOKEN N (N >= 200)\n");
        return 2;
    }
    r.reqs = calloc(r.n + r.n / 100 + 1, sizeof *r.reqs);
    r.c = flc_connect(argv[1], argv[2], NULL);
    if (!r.reqs || !r.c || flc_errcode(r.c) != 0) {
        printf("not ok - connect: %s\n", r.c ? flc_errmsg(r.c) : "out of memory");
        return 1;
    }
    rc = send_range(&r, 0, r.n / 2);
    /* A synchronous call while hundreds of replies are due: they are queued, not lost. */
    page = rc == 0 ? flc_log(r.c, &q) : NULL;
    tap(&r, page && flc_get(page, "events") != NULL,
        "a synchronous log read in the middle of a pipeline gets its own answer");
    if (rc == 0)
        rc = send_range(&r, r.n / 2, r.n);
    if (rc == 0)
        rc = collect(&r);
    tap(&r, rc == 0, "all replies collected");
    judge(&r);
    tap(&r, flc_reply_next(r.c, 0, &(uint64_t){0}, &page) == 0,
        "nothing is pending afterwards");
    flc_free(r.c);
    free(r.reqs);
    return r.failures ? 1 : 0;
}
