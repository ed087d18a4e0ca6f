/* row.c: the stored row format, primary keys, cell helpers, and the walk over a flow's row
 * versions that as-of reads and rollback share. */
#include "project.h"

#include <stdlib.h>
#include <string.h>

/* ---- rows ---- */

int fl_row_encode(const struct fl_row *r, struct fl_buf *out)
{
    const struct fl_table_def *t = &fl_table_defs[r->table];
    size_t need = 1 + t->ncols;
    uint8_t *p;

    /* Sized first, then written in place: one reserve per row instead of one per cell. */
    for (size_t i = 0; i < t->ncols; i++)
        need += r->c[i].t == FL_CELL_INT ? 8 : r->c[i].t == FL_CELL_STR ? 4 + r->c[i].len : 0;
    out->len = 0;
    if (fl_buf_reserve(out, need) != 0)
        return -1;
    p = out->p;
    *p++ = (uint8_t)t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        const struct fl_cell *c = &r->c[i];
        *p++ = c->t;
        if (c->t == FL_CELL_INT) {
            fl_put_be64(p, (uint64_t)c->i);
            p += 8;
        } else if (c->t == FL_CELL_STR) {
            fl_put_be32(p, c->len);
            memcpy(p + 4, c->s, c->len);
            p += 4 + c->len;
        }
    }
    out->len = need;
    return 0;
}

int fl_row_decode(int table, const void *buf, size_t len, struct fl_row *r)
{
    const uint8_t *p = buf, *end = p + len;
    const struct fl_table_def *t = &fl_table_defs[table];

    memset(r, 0, sizeof *r);
    r->table = table;
    if (len < 1 || p[0] != t->ncols)
        return -1;
    p++;
    for (size_t i = 0; i < t->ncols; i++) {
        struct fl_cell *c = &r->c[i];
        if (p >= end)
            return -1;
        c->t = *p++;
        if (c->t == FL_CELL_INT) {
            if (end - p < 8)
                return -1;
            c->i = (int64_t)fl_get_be64(p);
            p += 8;
        } else if (c->t == FL_CELL_STR) {
            if (end - p < 4)
                return -1;
            c->len = fl_get_be32(p);
            p += 4;
            if ((size_t)(end - p) < c->len)
                return -1;
            c->s = (const char *)p;
            p += c->len;
        } else if (c->t != FL_CELL_NULL) {
            return -1;
        }
    }
    return p == end ? 0 : -1;
}

/* Two cells hold the same value (null equals null). */
int fl_cell_eq(const struct fl_cell *a, const struct fl_cell *b)
{
    if (a->t != b->t)
        return 0;
    if (a->t == FL_CELL_INT)
        return a->i == b->i;
    if (a->t == FL_CELL_STR)
        return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
    return 1;
}

/* Order of primary-key cells: by kind, ints numerically, strings bytewise. */
int fl_cell_cmp(const struct fl_cell *a, const struct fl_cell *b)
{
    if (a->t != b->t)
        return a->t < b->t ? -1 : 1;
    if (a->t == FL_CELL_INT)
        return a->i < b->i ? -1 : a->i > b->i;
    if (a->t == FL_CELL_STR) {
        size_t n = a->len < b->len ? a->len : b->len;
        int c = memcmp(a->s, b->s, n);
        if (c)
            return c;
        return a->len < b->len ? -1 : a->len > b->len;
    }
    return 0;
}

int fl_row_pk_cmp(const struct fl_row *a, const struct fl_row *b)
{
    for (size_t i = 0; i < fl_table_defs[a->table].npk; i++) {
        int c = fl_cell_cmp(&a->c[i], &b->c[i]);
        if (c)
            return c;
    }
    return 0;
}

/* Point a cell at a borrowed string. */
void fl_cell_set_str(struct fl_cell *c, struct fl_str s)
{
    c->t = FL_CELL_STR;
    c->s = s.p ? s.p : "";
    c->len = (uint32_t)s.len;
}

/* Point a cell at a NUL-terminated literal. */
void fl_cell_set_cstr(struct fl_cell *c, const char *s)
{
    c->t = FL_CELL_STR;
    c->s = s;
    c->len = (uint32_t)strlen(s);
}

/* Make a cell an integer. */
void fl_cell_set_int(struct fl_cell *c, int64_t i)
{
    c->t = FL_CELL_INT;
    c->i = i;
}

/* True if the cell is the string s (enumerated statuses). */
int fl_cell_is(const struct fl_cell *c, const char *s)
{
    return c->t == FL_CELL_STR && c->len == strlen(s) && memcmp(c->s, s, c->len) == 0;
}

/* ---- keys ---- */

/* fl_buf_add_keystr's encoding, into p; returns the bytes written (at most 2 * len + 2). */
static size_t put_keystr(uint8_t *p, const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        p[n++] = (uint8_t)s[i];
        if (s[i] == 0)
            p[n++] = 0xFF;
    }
    p[n++] = 0;
    p[n++] = 0;
    return n;
}

int fl_pk_build(uint8_t out[FL_PK_MAX], const struct fl_row *r, uint64_t run_no)
{
    switch (r->table) {
    case FL_T_FLOWS:
        return 0; /* the flow row is the only row of its table under its flow_no */
    case FL_T_RUNS:
        fl_put_be64(out, run_no);
        return 8;
    default:
        break;
    }
    fl_put_be64(out, run_no);
    fl_put_be32(out + 8, (uint32_t)r->c[1].i);
    if (r->table == FL_T_PATCHES || r->table == FL_T_SAST) {
        if (r->c[2].len > FL_ID_MAX)
            return -1;
        return 12 + (int)put_keystr(out + 12, r->c[2].s, r->c[2].len);
    }
    if (r->table == FL_T_EXEC) {
        out[12] = (uint8_t)fl_enum_index((const char *const[]){"flow_job", "validation_job", NULL},
                                         r->c[FC_EX_JOB_TYPE].s, r->c[FC_EX_JOB_TYPE].len);
        return 13;
    }
    return 12;
}

/* One row image found in a flow's stream, for grouping by row. */
struct ver_item {
    const uint8_t *group; /* table(1) pk */
    size_t glen;
    uint64_t seq;
    size_t ord; /* place in the stream: of two images of a row in one entry, the later wins */
    MDB_val val;
};

static int ver_item_cmp(const void *pa, const void *pb)
{
    const struct ver_item *a = pa, *b = pb;
    size_t n = a->glen < b->glen ? a->glen : b->glen;
    int c = memcmp(a->group, b->group, n);

    if (c)
        return c;
    if (a->glen != b->glen)
        return a->glen < b->glen ? -1 : 1;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return a->ord < b->ord ? -1 : a->ord > b->ord;
}

static int ver_push(struct ver_item **items, size_t *n, size_t *cap, const struct ver_item *it)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 256;
        struct ver_item *p = realloc(*items, ncap * sizeof *p);
        if (!p)
            return -1;
        *items = p;
        *cap = ncap;
    }
    (*items)[(*n)++] = *it;
    return 0;
}

/* Add the row images of one stream entry (store_int.h) to items: -2 if they are malformed. */
static int ver_images(const MDB_val *v, uint64_t seq, struct ver_item **items, size_t *n,
                      size_t *cap)
{
    const uint8_t *p = (const uint8_t *)v->mv_data + 24, *end = (const uint8_t *)v->mv_data +
                                                                v->mv_size;

    while (p < end) {
        if (end - p < 3)
            return -2;
        size_t pklen = (size_t)p[0] << 8 | p[1];
        if ((size_t)(end - p) < 3 + pklen + 4)
            return -2;
        struct ver_item it = {.group = p + 2, .glen = 1 + pklen, .seq = seq, .ord = *n};
        p += 3 + pklen;
        it.val.mv_size = fl_get_be32(p);
        p += 4;
        if ((size_t)(end - p) < it.val.mv_size)
            return -2;
        it.val.mv_data = (void *)p;
        p += it.val.mv_size;
        if (ver_push(items, n, cap, &it) != 0)
            return -1;
    }
    return 0;
}

/* Gather the flow's row images, sort them by row then seq, and hand each row to cb. */
int fl_ver_scan(MDB_txn *txn, const struct fl_dbs *db, uint64_t flow_no, uint64_t as_of,
                fl_ver_cb cb, void *ctx)
{
    struct ver_item *items = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *c;
    MDB_val k, v;
    uint8_t prefix[9];
    int rc;

    /* Row images ride in their event's stream entry (flow_no 'S' seq). Gather them, then group
     * them by row. */
    fl_put_be64(prefix, flow_no);
    prefix[8] = FL_KEY_STREAM;
    if ((rc = mdb_cursor_open(txn, db->dbi[FL_DB_FLOWS], &c)) != 0)
        return rc;
    k.mv_size = 9;
    k.mv_data = prefix;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 17 || memcmp(k.mv_data, prefix, 9) != 0)
            break;
        if (v.mv_size < 24) {
            rc = -2;
            break;
        }
        if ((rc = ver_images(&v, fl_get_be64((const uint8_t *)k.mv_data + 9), &items, &n,
                             &cap)) != 0)
            break;
    }
    mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        free(items);
        return rc;
    }
    rc = 0;
    if (n > 1)
        qsort(items, n, sizeof *items, ver_item_cmp);
    for (size_t i = 0; i < n && rc == 0;) {
        MDB_val at = {0, NULL};
        size_t j = i;
        for (; j < n && items[j].glen == items[i].glen &&
               memcmp(items[j].group, items[i].group, items[i].glen) == 0;
             j++)
            if (items[j].seq <= as_of)
                at = items[j].val;
        rc = cb(ctx, items[i].group, items[i].glen, &items[j - 1].val, &at);
        i = j;
    }
    free(items);
    return rc;
}

