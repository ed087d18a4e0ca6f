/* event.c: form validation of events against schema.c, and their canonical encoding. */
#include "event.h"

#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "hash.h"
#include "util.h"

const struct fl_val *fl_event_get(const struct fl_event *ev, const char *name)
{
    int i = fl_event_field_index(ev->type, name);
    return i < 0 ? NULL : &ev->v[i];
}

static const char *mp_type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "null";
    case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "an integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "a float";
    case MSGPACK_OBJECT_STR: return "a string";
    case MSGPACK_OBJECT_ARRAY: return "an array";
    case MSGPACK_OBJECT_MAP: return "an object";
    case MSGPACK_OBJECT_BIN: return "binary";
    default: return "an extension value";
    }
}

/* Read an integer object into *out; 0 on success, -1 if not an integer or out of int64 range. */
static int mp_int(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return 0;
    }
    return -1;
}

static size_t count_nul(const char *p, size_t len)
{
    size_t n = 0;
    for (const char *q = p; (q = memchr(q, '\0', len - (size_t)(q - p))) != NULL; q++)
        n++;
    return n;
}

/* yajl's memory for one check (its handle, lexer, buffers and state stack: ~2.5 KiB) comes
 * from an arena on the stack: five mallocs and frees per JSON field cost ~300 of the loop's
 * instructions per event (callgrind, step/64). Each block is preceded by its size, for
 * realloc; what does not fit is malloc'd, and told apart by its address. */
#define JSON_ARENA 8192
#define JSON_ALIGN 16

struct json_arena {
    _Alignas(JSON_ALIGN) unsigned char buf[JSON_ARENA];
    size_t used;
};

static int arena_owns(const struct json_arena *a, const void *p)
{
    uintptr_t u = (uintptr_t)p, b = (uintptr_t)a->buf;
    return u >= b && u < b + sizeof a->buf;
}

static void *arena_malloc(void *ctx, size_t n)
{
    struct json_arena *a = ctx;
    size_t need = JSON_ALIGN + ((n + JSON_ALIGN - 1) & ~(size_t)(JSON_ALIGN - 1));
    unsigned char *p;

    if (n > sizeof a->buf || need > sizeof a->buf - a->used)
        return malloc(n);
    p = a->buf + a->used;
    memcpy(p, &n, sizeof n);
    a->used += need;
    return p + JSON_ALIGN;
}

static void *arena_realloc(void *ctx, void *p, size_t n)
{
    struct json_arena *a = ctx;
    size_t old;
    void *q;

    if (!p)
        return arena_malloc(ctx, n);
    if (!arena_owns(a, p))
        return realloc(p, n);
    memcpy(&old, (unsigned char *)p - JSON_ALIGN, sizeof old);
    if (n <= old)
        return p;
    if (!(q = arena_malloc(ctx, n)))
        return NULL;
    memcpy(q, p, old);
    return q;
}

static void arena_free(void *ctx, void *p)
{
    if (!arena_owns(ctx, p))
        free(p); /* arena blocks go with the arena */
}

/* A JSON field (findings_json) must parse as one JSON value (RFC 8259; any value at the top, no
 * trailing bytes). yajl's parser without callbacks only validates, building nothing: jansson's
 * json_loadb, used before, built a tree and took 6.5-8.4 us on the workload's 400-byte report
 * against 0.7-0.8 us here, and a quarter of all events carry one (bench/RESULTS.md, set J).
 * The byte named in an error is where the parser stopped: right after the token it refused. */
static int check_json(const struct fl_field_def *f, const char *p, size_t len,
                      struct fl_error *err)
{
    struct json_arena arena;
    yajl_alloc_funcs af = {arena_malloc, arena_realloc, arena_free, &arena};
    yajl_handle h;
    yajl_status st;
    size_t at = len;

    arena.used = 0;
    if (!(h = yajl_alloc(NULL, &af, NULL)))
        return fl_error_set(err, FL_EINTERNAL, "out of memory checking data.%s", f->name);
    st = yajl_parse(h, (const unsigned char *)p, len);
    if (st != yajl_status_ok)
        at = yajl_get_bytes_consumed(h);
    else
        st = yajl_complete_parse(h); /* a value cut short ends here: "premature EOF" */
    if (st == yajl_status_ok) {
        yajl_free(h);
        return 0;
    }
    unsigned char *why = yajl_get_error(h, 0, (const unsigned char *)p, len);
    size_t n = why ? strlen((const char *)why) : 0;
    while (n && (why[n - 1] == '\n' || why[n - 1] == ' '))
        n--;
    int rc = fl_error_set(err, FL_EBAD_REQUEST, "data.%s: is not valid JSON: %.*s (at byte %zu)",
                          f->name, (int)n, why ? (const char *)why : "", at);
    if (why)
        yajl_free_error(h, why);
    yajl_free(h);
    return rc;
}

static int check_string(const struct fl_field_def *f, const msgpack_object *o, struct fl_val *v,
                        int trusted, struct fl_error *err)
{
    size_t len = o->via.str.size, lo = 0, hi = FL_TEXT_MAX;
    const char *p = o->via.str.ptr;

    switch (f->kind) {
    case FL_FK_ID: lo = 1; hi = FL_ID_MAX; break;
    case FL_FK_STEP: lo = 1; hi = FL_STEP_MAX; break;
    case FL_FK_JSON: hi = FL_JSON_MAX; break;
    default: break;
    }
    /* bad_request, as CONTRACT.md 2 says of strings over their limit; too_large is for the
     * event, the batch and the frame. */
    if (len < lo || len > hi)
        return fl_error_set(err, FL_EBAD_REQUEST, "data.%s: must be %zu..%zu bytes, got %zu",
                            f->name, lo, hi, len);
    if (!trusted && !fl_utf8_valid(p, len))
        return fl_error_set(err, FL_EBAD_REQUEST, "data.%s: is not valid UTF-8", f->name);
    /* An id in a primary key is escaped in B-tree keys, a NUL byte as two (util.h, keystr):
     * the bound keeps every key within LMDB's 511-byte limit, so that a hostile id is refused
     * here and never breaks the commit it shares with other clients' appends. */
    if (f->key_max && !trusted && len + count_nul(p, len) > f->key_max)
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "data.%s: %zu bytes, %zu of them NUL; in storage keys a NUL takes two "
                            "bytes, and this id may take at most %zu there",
                            f->name, len, count_nul(p, len), f->key_max);
    if (f->kind == FL_FK_ENUM && fl_enum_index(f->enum_values, p, len) < 0) {
        char allowed[256] = "";
        for (int i = 0; f->enum_values[i]; i++) {
            if (i)
                strncat(allowed, "|", sizeof allowed - strlen(allowed) - 1);
            strncat(allowed, f->enum_values[i], sizeof allowed - strlen(allowed) - 1);
        }
        return fl_error_set(err, FL_EBAD_REQUEST, "data.%s: \"%.*s\" is not one of %s", f->name,
                            (int)(len > 64 ? 64 : len), p, allowed);
    }
    if (f->kind == FL_FK_JSON && !trusted) {
        int rc = check_json(f, p, len, err);
        if (rc != 0)
            return rc;
    }
    v->s.p = p;
    v->s.len = len;
    return 0;
}

/* Check one field value against its definition and store it in v. */
static int check_field(const struct fl_field_def *f, const msgpack_object *o, struct fl_val *v,
                       int trusted, struct fl_error *err)
{
    if (o->type == MSGPACK_OBJECT_NIL) {
        if (f->required)
            return fl_error_set(err, FL_EBAD_REQUEST, "data.%s: is required and may not be null",
                                f->name);
        return 0; /* null is the same as absent */
    }
    if (f->kind == FL_FK_INT) {
        int64_t i;
        if (mp_int(o, &i) != 0) /* not an integer, or one of 2^63 and over */
            return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                       ? fl_error_set(err, FL_EBAD_REQUEST, "data.%s: %llu is outside %lld..%lld",
                                      f->name, (unsigned long long)o->via.u64, (long long)f->min,
                                      (long long)f->max)
                       : fl_error_set(err, FL_EBAD_REQUEST, "data.%s: must be an integer, got %s",
                                      f->name, mp_type_name(o));
        if (i < f->min || i > f->max)
            return fl_error_set(err, FL_EBAD_REQUEST,
                                "data.%s: %lld is outside %lld..%lld", f->name, (long long)i,
                                (long long)f->min, (long long)f->max);
        v->i = i;
    } else {
        if (o->type != MSGPACK_OBJECT_STR)
            return fl_error_set(err, FL_EBAD_REQUEST, "data.%s: must be a string, got %s",
                                f->name, mp_type_name(o));
        if (check_string(f, o, v, trusted, err) != 0)
            return err ? err->code : FL_EBAD_REQUEST;
    }
    v->set = 1;
    return 0;
}

/* A field of a data object to pack: its index in the schema, and whether it was given as null. */
struct field_ref {
    uint8_t fi, nil;
};

/* Pack the fields fr[0..n) as a map into ev->data (malloc'ed). */
static int encode_fields(struct fl_event *ev, const struct field_ref *fr, size_t n,
                         struct fl_error *err)
{
    const struct fl_event_def *d = &fl_event_defs[ev->type];
    size_t size = fl_mp_map_len(n);
    uint8_t *p;

    for (size_t k = 0; k < n; k++) {
        const struct fl_field_def *f = &d->fields[fr[k].fi];
        const struct fl_val *v = &ev->v[fr[k].fi];
        size += fl_mp_str_len(f->len) + f->len +
                (fr[k].nil              ? 1
                 : f->kind == FL_FK_INT ? fl_mp_int_len(v->i)
                                        : fl_mp_str_len(v->s.len) + v->s.len);
    }
    if (!(ev->data = malloc(size)))
        return fl_error_set(err, FL_EINTERNAL, "out of memory encoding event data");
    p = (uint8_t *)ev->data;
    p += fl_mp_put_map(p, n);
    for (size_t k = 0; k < n; k++) {
        const struct fl_field_def *f = &d->fields[fr[k].fi];
        const struct fl_val *v = &ev->v[fr[k].fi];
        p += fl_mp_put_str(p, f->len);
        memcpy(p, f->name, f->len);
        p += f->len;
        if (fr[k].nil) {
            *p++ = 0xc0;
        } else if (f->kind == FL_FK_INT) {
            p += fl_mp_put_int(p, v->i);
        } else {
            p += fl_mp_put_str(p, v->s.len);
            if (v->s.len)
                memcpy(p, v->s.p, v->s.len);
            p += v->s.len;
        }
    }
    ev->data_len = size;
    return 0;
}

/* The set fields in schema order are the one canonical form of a data object: the payload hash
 * (idempotency: a retry is the same event whatever its key order, and a null is the same as an
 * absent field) is of it. What is stored, and read back by log, is the data as it was appended
 * (CONTRACT.md 6): its keys in their order, nulls kept, values as checked (integers in their
 * shortest form). Most clients send the schema's order without nulls, and then the two are the
 * same bytes, packed once. */
static int encode_data(struct fl_event *ev, const struct field_ref *given, size_t ngiven,
                       int in_order, struct fl_error *err)
{
    const struct fl_event_def *d = &fl_event_defs[ev->type];
    struct field_ref canon[FL_MAX_FIELDS];
    size_t n = 0;

    if (in_order) { /* the schema's order, no null: the given fields are the canonical form */
        if (encode_fields(ev, given, ngiven, err) != 0)
            return -1;
        fl_hash_payload(d->name, d->name_len, ev->data, ev->data_len, ev->payload_hash);
        return 0;
    }
    for (size_t i = 0; i < d->nfields; i++)
        if (ev->v[i].set)
            canon[n++] = (struct field_ref){(uint8_t)i, 0};
    if (encode_fields(ev, canon, n, err) != 0)
        return -1;
    fl_hash_payload(d->name, d->name_len, ev->data, ev->data_len, ev->payload_hash);
    free(ev->data);
    ev->data = NULL;
    return encode_fields(ev, given, ngiven, err);
}

static int parse_data(struct fl_event *ev, const msgpack_object *data,
                      const struct fl_event_limits *lim, struct fl_error *err)
{
    const struct fl_event_def *d = &fl_event_defs[ev->type];
    size_t max_event = lim && lim->max_event ? lim->max_event : FL_DEFAULT_MAX_EVENT;

    struct field_ref given[FL_MAX_FIELDS];
    size_t ngiven = 0;
    int in_order = 1;  /* fields in the schema's order, none null */
    uint32_t seen = 0; /* by field index (FL_MAX_FIELDS < 32) */

    if (data->type != MSGPACK_OBJECT_MAP)
        return fl_error_set(err, FL_EBAD_REQUEST, "data: must be an object, got %s",
                            mp_type_name(data));
    for (uint32_t k = 0; k < data->via.map.size; k++) {
        const msgpack_object *key = &data->via.map.ptr[k].key;
        int fi = -1;
        if (key->type == MSGPACK_OBJECT_STR && key->via.str.size > 0)
            for (size_t i = 0; i < d->nfields && fi < 0; i++) /* field names are distinct */
                if (key->via.str.size == d->fields[i].len &&
                    key->via.str.ptr[0] == d->fields[i].name[0] &&
                    memcmp(key->via.str.ptr, d->fields[i].name, d->fields[i].len) == 0)
                    fi = (int)i;
        if (fi < 0)
            return fl_error_set(err, FL_EBAD_REQUEST, "data.%.*s: unknown field for %s",
                                key->type == MSGPACK_OBJECT_STR ? (int)(key->via.str.size > 64 ? 64 : key->via.str.size) : 5,
                                key->type == MSGPACK_OBJECT_STR ? key->via.str.ptr : "(key)",
                                d->name);
        if (seen & (1u << fi))
            return fl_error_set(err, FL_EBAD_REQUEST, "data.%s: given twice", d->fields[fi].name);
        seen |= 1u << fi;
        if (check_field(&d->fields[fi], &data->via.map.ptr[k].val, &ev->v[fi],
                        lim && lim->trusted, err) != 0)
            return err ? err->code : FL_EBAD_REQUEST;
        /* at most FL_MAX_FIELDS: every field at most once */
        given[ngiven] = (struct field_ref){(uint8_t)fi, !ev->v[fi].set};
        if (given[ngiven].nil || (ngiven && fi < given[ngiven - 1].fi))
            in_order = 0;
        ngiven++;
    }
    for (size_t i = 0; i < d->nfields; i++)
        if (d->fields[i].required && !ev->v[i].set)
            return fl_error_set(err, FL_EBAD_REQUEST, "data.%s: is required for %s",
                                d->fields[i].name, d->name);
    /* Cross-field rule: flow_status goes only with a terminal run status. */
    if (ev->type == FL_EV_RUN_STATUS && fl_event_get(ev, "flow_status")->set) {
        const struct fl_str *st = &fl_event_get(ev, "status")->s;
        if (fl_enum_index((const char *const[]){"CREATING", "QUEUED", "RUNNING", NULL}, st->p,
                          st->len) >= 0)
            return fl_error_set(err, FL_EBAD_REQUEST,
                                "data.flow_status: allowed only with a terminal status "
                                "(SUCCESS, FAILED, CANCELLED), not %.*s",
                                (int)st->len, st->p);
    }
    if (encode_data(ev, given, ngiven, in_order, err) != 0)
        return err ? err->code : FL_EINTERNAL;
    /* The log's events passed the limit of the server that took them, which may have been
     * larger than this one's: a replay never refuses them. */
    if (ev->data_len > max_event && !(lim && lim->trusted)) {
        size_t got = ev->data_len;
        fl_event_free(ev);
        return fl_error_set(err, FL_ETOO_LARGE, "event data is %zu bytes; the limit is %zu", got,
                            max_event);
    }
    return 0;
}

int fl_event_parse_parts(const char *type, size_t type_len, const char *event_id,
                         size_t event_id_len, const msgpack_object *data,
                         const struct fl_event_limits *lim, struct fl_event *ev,
                         struct fl_error *err)
{
    int t = fl_event_type_from_name(type, type_len);

    memset(ev, 0, sizeof *ev);
    if (t < 0)
        return fl_error_set(err, FL_EBAD_REQUEST, "type: \"%.*s\" is not an event type",
                            (int)(type_len > 64 ? 64 : type_len), type);
    ev->type = (enum fl_event_type)t;
    if (event_id) {
        if (event_id_len < 1 || event_id_len > FL_EVENT_ID_MAX)
            return fl_error_set(err, FL_EBAD_REQUEST, "event_id: must be 1..%d bytes, got %zu",
                                FL_EVENT_ID_MAX, event_id_len);
        if (!fl_utf8_valid(event_id, event_id_len))
            return fl_error_set(err, FL_EBAD_REQUEST, "event_id: is not valid UTF-8");
        ev->event_id.p = event_id;
        ev->event_id.len = event_id_len;
    }
    return parse_data(ev, data, lim, err);
}

int fl_event_parse(const msgpack_object *obj, const struct fl_event_limits *lim,
                   struct fl_event *ev, struct fl_error *err)
{
    const msgpack_object *type = NULL, *data = NULL, *eid = NULL, *ver = NULL;
    int64_t expected = -1;
    int rc;

    memset(ev, 0, sizeof *ev);
    if (obj->type != MSGPACK_OBJECT_MAP)
        return fl_error_set(err, FL_EBAD_REQUEST, "event: must be an object, got %s",
                            mp_type_name(obj));
    for (uint32_t k = 0; k < obj->via.map.size; k++) {
        const msgpack_object *key = &obj->via.map.ptr[k].key, *val = &obj->via.map.ptr[k].val;
        const msgpack_object **slot = fl_mp_streq(key, "type")               ? &type
                                      : fl_mp_streq(key, "data")             ? &data
                                      : fl_mp_streq(key, "event_id")         ? &eid
                                      : fl_mp_streq(key, "expected_version") ? &ver
                                                                             : NULL;
        if (!slot)
            return fl_error_set(err, FL_EBAD_REQUEST,
                                "%.*s: unknown key (an event has type, data, event_id, "
                                "expected_version)",
                                key->type == MSGPACK_OBJECT_STR ? (int)(key->via.str.size > 64 ? 64 : key->via.str.size) : 5,
                                key->type == MSGPACK_OBJECT_STR ? key->via.str.ptr : "(key)");
        if (*slot)
            return fl_error_set(err, FL_EBAD_REQUEST, "event: a key is given twice");
        *slot = val;
    }
    if (!type || type->type != MSGPACK_OBJECT_STR)
        return fl_error_set(err, FL_EBAD_REQUEST, "type: is required and must be a string");
    if (!data || data->type == MSGPACK_OBJECT_NIL)
        return fl_error_set(err, FL_EBAD_REQUEST, "data: is required");
    if (eid && eid->type != MSGPACK_OBJECT_NIL && eid->type != MSGPACK_OBJECT_STR)
        return fl_error_set(err, FL_EBAD_REQUEST, "event_id: must be a string, got %s",
                            mp_type_name(eid));
    if (ver && ver->type != MSGPACK_OBJECT_NIL) {
        if (mp_int(ver, &expected) != 0) /* not an integer, or one of 2^63 and over */
            return ver->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                       ? fl_error_set(err, FL_EBAD_REQUEST,
                                      "expected_version: %llu is outside 0..%lld",
                                      (unsigned long long)ver->via.u64, (long long)INT64_MAX)
                       : fl_error_set(err, FL_EBAD_REQUEST,
                                      "expected_version: must be an integer >= 0, got %s",
                                      mp_type_name(ver));
        if (expected < 0)
            return fl_error_set(err, FL_EBAD_REQUEST,
                                "expected_version: must be an integer >= 0, got %lld",
                                (long long)expected);
    }
    rc = fl_event_parse_parts(type->via.str.ptr, type->via.str.size,
                              eid && eid->type == MSGPACK_OBJECT_STR
                                  ? (eid->via.str.ptr ? eid->via.str.ptr : "")
                                  : NULL,
                              eid && eid->type == MSGPACK_OBJECT_STR ? eid->via.str.size : 0,
                              data, lim, ev, err);
    if (rc != 0)
        return rc;
    if (expected >= 0) {
        ev->has_expected_version = 1;
        ev->expected_version = expected;
    }
    return 0;
}

void fl_event_free(struct fl_event *ev)
{
    if (!ev)
        return;
    free(ev->data);
    ev->data = NULL;
    ev->data_len = 0;
}
