/* record.c: encode and decode log records; see record.h for the layout. */
#include "record.h"

#include <string.h>

#include "schema.h"
#include "wire.h"

int fl_record_encode(struct fl_buf *out, uint64_t seq, int64_t ts, struct fl_str tenant,
                     const struct fl_event *ev, const uint8_t prev[FL_CHAIN_LEN],
                     uint8_t chain_out[FL_CHAIN_LEN])
{
    const char *type = fl_event_defs[ev->type].name;
    size_t tlen = strlen(type), body;
    uint8_t *p;

    /* Sized, then packed in place (util.h: the same bytes as msgpack-c's packer). */
    body = 1 + fl_mp_uint_len(FL_RECORD_FORMAT) + fl_mp_uint_len(seq) + fl_mp_int_len(ts) +
           fl_mp_str_len(tenant.len) + tenant.len + fl_mp_str_len(tlen) + tlen +
           (ev->event_id.p ? fl_mp_str_len(ev->event_id.len) + ev->event_id.len : 1) +
           ev->data_len;
    out->len = 0;
    if (fl_buf_reserve(out, body + FL_RECORD_TRAILER) != 0)
        return FL_EINTERNAL;
    p = out->p;
    p += fl_mp_put_array(p, 7);
    p += fl_mp_put_uint(p, FL_RECORD_FORMAT);
    p += fl_mp_put_uint(p, seq);
    p += fl_mp_put_int(p, ts);
    p += fl_mp_put_str(p, tenant.len);
    if (tenant.len)
        memcpy(p, tenant.p, tenant.len);
    p += tenant.len;
    p += fl_mp_put_str(p, tlen);
    memcpy(p, type, tlen);
    p += tlen;
    if (ev->event_id.p) {
        p += fl_mp_put_str(p, ev->event_id.len);
        if (ev->event_id.len)
            memcpy(p, ev->event_id.p, ev->event_id.len);
        p += ev->event_id.len;
    } else {
        *p++ = 0xc0; /* nil */
    }
    if (ev->data_len)
        memcpy(p, ev->data, ev->data_len);
    fl_hash_chain(prev, out->p, body, chain_out);
    memcpy(out->p + body, chain_out, FL_CHAIN_LEN);
    fl_hash_checksum(out->p, body + FL_CHAIN_LEN, out->p + body + FL_CHAIN_LEN);
    out->len = body + FL_RECORD_TRAILER;
    return 0;
}

static int str_at(const msgpack_object *o, struct fl_str *s)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return -1;
    s->p = o->via.str.ptr;
    s->len = o->via.str.size;
    return 0;
}

int fl_record_decode(const void *buf, size_t len, struct fl_record *r, msgpack_unpacked *up,
                     struct fl_error *err)
{
    const uint8_t *p = buf;
    uint8_t sum[8];
    size_t off = 0;
    const msgpack_object *a;

    msgpack_unpacked_init(up);
    memset(r, 0, sizeof *r);
    if (len < FL_RECORD_TRAILER + 1)
        return fl_error_set(err, FL_EINTERNAL, "record too short (%zu bytes)", len);
    fl_hash_checksum(p, len - 8, sum);
    if (memcmp(sum, p + len - 8, 8) != 0)
        return fl_error_set(err, FL_EINTERNAL, "checksum mismatch");
    r->body = p;
    r->body_len = len - FL_RECORD_TRAILER;
    r->chain = p + r->body_len;
    /* A record whose checksum was forged could still declare absurd counts: check first. */
    if (fl_wire_check(p, r->body_len, err) != 0 ||
        msgpack_unpack_next(up, buf, r->body_len, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != r->body_len)
        return fl_error_set(err, FL_EINTERNAL, "malformed record body");
    a = &up->data;
    if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != 7)
        return fl_error_set(err, FL_EINTERNAL, "malformed record envelope");
    a = a->via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 != FL_RECORD_FORMAT)
        return fl_error_set(err, FL_EINTERNAL, "unknown record format");
    if (a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fl_error_set(err, FL_EINTERNAL, "malformed record seq");
    r->seq = a[1].via.u64;
    if (a[2].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        r->ts = (int64_t)a[2].via.u64;
    else if (a[2].type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        r->ts = a[2].via.i64;
    else
        return fl_error_set(err, FL_EINTERNAL, "malformed record ts");
    if (str_at(&a[3], &r->tenant) || str_at(&a[4], &r->type))
        return fl_error_set(err, FL_EINTERNAL, "malformed record tenant or type");
    if (a[5].type != MSGPACK_OBJECT_NIL && str_at(&a[5], &r->event_id))
        return fl_error_set(err, FL_EINTERNAL, "malformed record event_id");
    if (a[5].type == MSGPACK_OBJECT_STR && !r->event_id.p)
        r->event_id.p = "";
    if (a[6].type != MSGPACK_OBJECT_MAP)
        return fl_error_set(err, FL_EINTERNAL, "malformed record data");
    r->data = &a[6];
    return 0;
}
