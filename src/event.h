/* event.h: an event's form: parse a msgpack event object, check every field against the schema
 * (types, enumerations, lengths, UTF-8, JSON findings) and produce its canonical data encoding.
 * No state is consulted here: that is project.c's job. */
#ifndef FL_EVENT_H
#define FL_EVENT_H

#include <msgpack.h>
#include <stdint.h>
#include <string.h>

#include "err.h"
#include "schema.h"

struct fl_str {
    const char *p;
    size_t len;
};

/* One field's value. Strings are borrowed from the parsed msgpack object. */
struct fl_val {
    int set;
    int64_t i;
    struct fl_str s;
};

struct fl_event {
    enum fl_event_type type;
    struct fl_str event_id; /* len 0: none */
    int has_expected_version;
    int64_t expected_version;
    struct fl_val v[FL_MAX_FIELDS]; /* by the field's index in fl_event_defs[type] */
    /* Canonical data: a msgpack map of the fields given (nulls dropped) in schema order.
     * Owned; freed by fl_event_free. This is what the log stores and replays. */
    char *data;
    size_t data_len;
    uint8_t payload_hash[16]; /* xxh3-128 of type name and canonical data: idempotency */
};

struct fl_event_limits {
    size_t max_event; /* canonical data bytes; default 1 MiB */
    int trusted;      /* replaying the checksummed log: skip the UTF-8 and JSON scans, which
                         the event passed when it was appended */
};

#define FL_DEFAULT_MAX_EVENT (1024 * 1024)

/* Parse {type, data, event_id?, expected_version?} into ev. On failure returns a negative
 * fl_err (FL_EBAD_REQUEST or FL_ETOO_LARGE) with a message naming the field; ev holds nothing
 * to free. Strings in ev borrow from obj, which must outlive ev. */
int fl_event_parse(const msgpack_object *obj, const struct fl_event_limits *lim,
                   struct fl_event *ev, struct fl_error *err);
/* Parse the parts stored in the log (type name, event id, data map). Used for replay. */
int fl_event_parse_parts(const char *type, size_t type_len, const char *event_id,
                         size_t event_id_len, const msgpack_object *data,
                         const struct fl_event_limits *lim, struct fl_event *ev,
                         struct fl_error *err);
void fl_event_free(struct fl_event *ev);

/* The value of field `name` (which must exist in the type's schema). */
const struct fl_val *fl_event_get(const struct fl_event *ev, const char *name);

/* True if obj is a msgpack string equal to the NUL-terminated s. Inline: for a literal s the
 * compiler knows its length. */
static inline int fl_mp_streq(const msgpack_object *obj, const char *s)
{
    size_t n = strlen(s);
    return obj->type == MSGPACK_OBJECT_STR && obj->via.str.size == n &&
           (n == 0 || memcmp(obj->via.str.ptr, s, n) == 0);
}

#endif
