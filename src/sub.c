/* sub.c: subscriptions as cursors over the log: catch up, go live, pause, resume. */
#include "sub.h"

#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* Copy a borrowed filter string so the subscription outlives the request frame. */
static int sub_dup(struct fl_str in, char **out, struct fl_str *dst)
{
    *out = NULL;
    dst->p = NULL;
    dst->len = 0;
    if (in.len == 0)
        return 0;
    *out = malloc(in.len);
    if (!*out)
        return -1;
    memcpy(*out, in.p, in.len);
    dst->p = *out;
    dst->len = in.len;
    return 0;
}

struct sub *sub_new(uint64_t id, const struct fl_log_filter *f)
{
    struct sub *s = calloc(1, sizeof *s);

    if (!s)
        return NULL;
    s->id = id;
    s->f = *f;
    s->f.limit = 0;
    s->next = f->from ? f->from : 1;
    if (sub_dup(f->flow_id, &s->flow_id, &s->f.flow_id) != 0 ||
        sub_dup(f->run_id, &s->run_id, &s->f.run_id) != 0) {
        sub_free(s);
        return NULL;
    }
    return s;
}

void sub_free(struct sub *s)
{
    if (!s)
        return;
    free(s->flow_id);
    free(s->run_id);
    free(s);
}

/* fl_query_log reports where to continue only inside the packed result, so read "next" back
 * from it (the result map is {"events", "next", "head"}). */
static int sub_result_next(const char *buf, size_t len, uint64_t *next)
{
    msgpack_unpacked u;
    const msgpack_object *o;
    size_t off = 0;
    int rc = -1;

    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, buf, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len) {
        o = fl_wire_get(&u.data, "next");
        if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            *next = o->via.u64;
            rc = 0;
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* Pack one push into sb from s->next; *count gets the events in it (0: nothing to send). */
static int sub_pack_one(struct sub *s, struct fl_store *st, struct fl_str tenant,
                        msgpack_sbuffer *sb, size_t max_bytes, size_t max_frame, uint64_t *count,
                        struct fl_error *err)
{
    msgpack_packer pk;
    struct fl_log_filter f = s->f;
    uint64_t next = 0;
    size_t off, res;
    int rc;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    off = fl_wire_frame_begin(sb);
    msgpack_pack_map(&pk, 3);
    fl_wire_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, s->id);
    fl_wire_pack_cstr(&pk, "push");
    fl_wire_pack_cstr(&pk, "events");
    fl_wire_pack_cstr(&pk, "result");
    res = sb->size;
    f.from = s->next;
    f.limit = 0;
    f.max_bytes = max_bytes;
    if ((rc = fl_query_log(st, tenant, &f, &pk, count, err)) != 0)
        return rc;
    if (sub_result_next(sb->data + res, sb->size - res, &next) != 0 || next <= s->next)
        return fl_error_set(err, FL_EINTERNAL,
                            "subscription %llu: the log read made no progress at seq %llu",
                            (unsigned long long)s->id, (unsigned long long)s->next);
    s->next = next;
    if (*count == 0)
        return 0;
    if (fl_wire_frame_end(sb, off, max_frame) != 0)
        return fl_error_set(err, FL_ETOO_LARGE,
                            "subscription %llu: an event near seq %llu does not fit in one "
                            "frame of %zu bytes; raise --max-frame",
                            (unsigned long long)s->id, (unsigned long long)f.from, max_frame);
    return 0;
}

int sub_pump(struct sub *s, struct fl_store *st, struct fl_str tenant, msgpack_sbuffer *sb,
             struct evbuffer *out, size_t limit, size_t max_bytes, size_t max_frame,
             struct fl_error *err)
{
    uint64_t head = fl_store_head(st), count;
    int rc;

    while (s->next <= head) {
        if (evbuffer_get_length(out) >= limit)
            return SUB_BLOCKED;
        sb->size = 0;
        count = 0;
        rc = sub_pack_one(s, st, tenant, sb, max_bytes, max_frame, &count, err);
        if (rc == 0 && count > 0 && evbuffer_add(out, sb->data, sb->size) != 0)
            rc = fl_error_set(err, FL_EINTERNAL, "out of memory queueing a push");
        sb->size = 0;
        if (rc != 0)
            return rc;
        s->pushed += count;
    }
    return SUB_CAUGHT_UP;
}
