/* row.c: the stored row format, primary keys, cell helpers, and the walk over a flow's row
 * versions that as-of reads and rollback share. */
#include "project.h"

#include <stdlib.h>
#include <string.h>

/* ---- rows ---- */

int fl_row_encode(const struct fl_row *r, struct fl_buf *out)
{
    const struct fl_table_def *t = &fl_table_defs[r->table];

    out->len = 0;
    if (fl_buf_add_u8(out, (uint8_t)t->ncols) != 0)
        return -1;
    for (size_t i = 0; i < t->ncols; i++) {
        const struct fl_cell *c = &r->c[i];
        if (fl_buf_add_u8(out, c->t) != 0)
            return -1;
        if (c->t == FL_CELL_INT && fl_buf_add_be64(out, (uint64_t)c->i) != 0)
            return -1;
        if (c->t == FL_CELL_STR &&
            (fl_buf_add_be32(out, c->len) != 0 || fl_buf_add(out, c->s, c->len) != 0))
            return -1;
    }
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

int fl_pk_build(struct fl_buf *out, const struct fl_row *r, uint64_t flow_no, uint64_t run_no)
{
    int rc = 0;

    switch (r->table) {
    case FL_T_FLOWS:
        (void)flow_no; /* the flow row is the only row of its table under its flow_no */
        return 0;
    case FL_T_RUNS:
        return fl_buf_add_be64(out, run_no);
    default:
        break;
    }
    rc |= fl_buf_add_be64(out, run_no);
    rc |= fl_buf_add_be32(out, (uint32_t)r->c[1].i);
    if (r->table == FL_T_PATCHES || r->table == FL_T_SAST)
        rc |= fl_buf_add_keystr(out, r->c[2].s, r->c[2].len);
    else if (r->table == FL_T_EXEC)
        rc |= fl_buf_add_u8(out, (uint8_t)fl_enum_index(
                                     (const char *const[]){"flow_job", "validation_job", NULL},
                                     r->c[FC_EX_JOB_TYPE].s, r->c[FC_EX_JOB_TYPE].len));
    return rc ? -1 : 0;
}

/* One row image found in a flow's stream, for grouping by row. */
struct ver_item {
    const uint8_t *group; /* table(1) pk */
    size_t glen;
    uint64_t seq;
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
    return a->seq < b->seq ? -1 : a->seq > b->seq;
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

    /* Row images sit in the stream right after their event's entry (flow_no 'S' seq table
     * pk), so that one event's writes share a page. Gather them, then group them by row. */
    fl_put_be64(prefix, flow_no);
    prefix[8] = FL_KEY_STREAM;
    if ((rc = mdb_cursor_open(txn, db->dbi[FL_DB_FLOWS], &c)) != 0)
        return rc;
    k.mv_size = 9;
    k.mv_data = prefix;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 17 || memcmp(k.mv_data, prefix, 9) != 0)
            break;
        if (k.mv_size == 17)
            continue; /* the event's stream entry itself */
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            struct ver_item *p = realloc(items, ncap * sizeof *p);
            if (!p) {
                rc = -1;
                break;
            }
            items = p;
            cap = ncap;
        }
        items[n].group = (const uint8_t *)k.mv_data + 17;
        items[n].glen = k.mv_size - 17;
        items[n].seq = fl_get_be64((const uint8_t *)k.mv_data + 9);
        items[n].val = v;
        n++;
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

