/* json.c: msgpack <-> JSON for the flowlog CLI (see json.h for the mapping). */
#include "json.h"

#include <inttypes.h>
#include <msgpack/timestamp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_DEPTH 64

static int to_mp(const json_t *v, msgpack_packer *pk, char *err, int depth);

/* Pack a JSON object's members in their order. */
static int obj_to_mp(const json_t *v, msgpack_packer *pk, char *err, int depth)
{
    void *it;

    msgpack_pack_map(pk, json_object_size(v));
    for (it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
        const char *k = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        msgpack_pack_str(pk, klen);
        msgpack_pack_str_body(pk, k, klen);
        if (to_mp(json_object_iter_value(it), pk, err, depth + 1) != 0)
            return -1;
    }
    return 0;
}

/* Pack one JSON value, recursively. */
static int to_mp(const json_t *v, msgpack_packer *pk, char *err, int depth)
{
    if (depth > MAX_DEPTH) {
        snprintf(err, FJSON_ERR_MAX, "JSON nested deeper than %d", MAX_DEPTH);
        return -1;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return obj_to_mp(v, pk, err, depth);
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(v));
        for (size_t i = 0; i < json_array_size(v); i++)
            if (to_mp(json_array_get(v, i), pk, err, depth + 1) != 0)
                return -1;
        return 0;
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(v));
        msgpack_pack_str_body(pk, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        return 0;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        return 0;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return 0;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return 0;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        return 0;
    }
    snprintf(err, FJSON_ERR_MAX, "unknown JSON value type");
    return -1;
}

/* The entry point keeps the depth counter private. */
int fjson_to_msgpack(const json_t *v, msgpack_packer *pk, char err[FJSON_ERR_MAX])
{
    return to_mp(v, pk, err, 0);
}

/* People read "2026-11-21 22:39:03.123456" more easily; JSON keeps RFC 3339. */
void fjson_format_time(int64_t us, enum fjson_time tf, char out[32])
{
    fl_time_format(us, out);
    if (tf == FJSON_TIME_HUMAN) {
        char *t = strchr(out, 'T'), *z = strchr(out, 'Z');
        if (t)
            *t = ' ';
        if (z)
            *z = '\0';
    }
}

/* A lower-case hex string of n bytes. */
static json_t *hex_string(const void *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *b = p;
    char *s = malloc(2 * n + 1);
    json_t *j;

    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[b[i] >> 4];
        s[2 * i + 1] = digits[b[i] & 15];
    }
    s[2 * n] = '\0';
    j = json_stringn(s, 2 * n);
    free(s);
    return j;
}

/* An extension value: timestamps as time strings, others as {"ext", "hex"}. */
static json_t *ext_to_json(const msgpack_object *o, enum fjson_time tf, char *err)
{
    msgpack_timestamp t;
    char buf[32];

    if (o->via.ext.type == -1) {
        if (!msgpack_object_to_timestamp(o, &t) || t.tv_nsec >= 1000000000u) {
            snprintf(err, FJSON_ERR_MAX, "malformed msgpack timestamp (%u bytes)",
                     o->via.ext.size);
            return NULL;
        }
        if (t.tv_sec > INT64_MAX / 1000000 - 1 || t.tv_sec < INT64_MIN / 1000000 + 1) {
            snprintf(err, FJSON_ERR_MAX, "timestamp out of range");
            return NULL;
        }
        fjson_format_time(t.tv_sec * 1000000 + t.tv_nsec / 1000, tf, buf);
        return json_string(buf);
    }
    return json_pack("{s:i,s:o}", "ext", (json_int_t)o->via.ext.type, "hex",
                     hex_string(o->via.ext.ptr, o->via.ext.size));
}

static json_t *from_mp(const msgpack_object *o, enum fjson_time tf, char *err, int depth);

/* A str object's bytes. msgpack-c may give an empty str a NULL ptr (when no earlier item of
 * the buffer had a payload), which jansson rejects: an empty string is still a string. */
static const char *mp_str(const msgpack_object *o)
{
    return o->via.str.size ? o->via.str.ptr : "";
}

/* A map, whose keys must be strings. */
static json_t *map_to_json(const msgpack_object *o, enum fjson_time tf, char *err, int depth)
{
    json_t *j = json_object();

    for (uint32_t i = 0; j && i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        json_t *v;
        if (k->type != MSGPACK_OBJECT_STR) {
            snprintf(err, FJSON_ERR_MAX, "a map key is not a string");
            json_decref(j);
            return NULL;
        }
        v = from_mp(&o->via.map.ptr[i].val, tf, err, depth + 1);
        if (!v || json_object_setn_new(j, mp_str(k), k->via.str.size, v) != 0) {
            if (v)
                snprintf(err, FJSON_ERR_MAX, "a map key is not valid UTF-8");
            json_decref(j);
            return NULL;
        }
    }
    return j;
}

/* An array, element by element. */
static json_t *array_to_json(const msgpack_object *o, enum fjson_time tf, char *err, int depth)
{
    json_t *j = json_array();

    for (uint32_t i = 0; j && i < o->via.array.size; i++) {
        json_t *v = from_mp(&o->via.array.ptr[i], tf, err, depth + 1);
        if (!v || json_array_append_new(j, v) != 0) {
            json_decref(j);
            return NULL;
        }
    }
    return j;
}

/* A string, which JSON needs to be UTF-8. */
static json_t *str_to_json(const msgpack_object *o, char *err)
{
    json_t *j = json_stringn(mp_str(o), o->via.str.size);

    if (!j)
        snprintf(err, FJSON_ERR_MAX, "a string is not valid UTF-8");
    return j;
}

/* Convert one msgpack object, recursively. */
static json_t *from_mp(const msgpack_object *o, enum fjson_time tf, char *err, int depth)
{
    json_t *j = NULL;

    if (depth > MAX_DEPTH) {
        snprintf(err, FJSON_ERR_MAX, "msgpack nested deeper than %d", MAX_DEPTH);
        return NULL;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX) {
            snprintf(err, FJSON_ERR_MAX, "integer %" PRIu64 " does not fit JSON's range",
                     o->via.u64);
            return NULL;
        }
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!(j = json_real(o->via.f64)))
            snprintf(err, FJSON_ERR_MAX, "a float is NaN or infinite");
        return j;
    case MSGPACK_OBJECT_STR:
        return str_to_json(o, err);
    case MSGPACK_OBJECT_BIN:
        return hex_string(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT:
        return ext_to_json(o, tf, err);
    case MSGPACK_OBJECT_ARRAY:
        return array_to_json(o, tf, err, depth);
    case MSGPACK_OBJECT_MAP:
        return map_to_json(o, tf, err, depth);
    }
    snprintf(err, FJSON_ERR_MAX, "unknown msgpack type %d", (int)o->type);
    return NULL;
}

/* A failure always comes with a message, even one the recursion did not set. */
json_t *fjson_from_msgpack(const msgpack_object *o, enum fjson_time tf, char err[FJSON_ERR_MAX])
{
    json_t *j;

    err[0] = '\0';
    j = from_mp(o, tf, err, 0);
    if (!j && !err[0])
        snprintf(err, FJSON_ERR_MAX, "out of memory");
    return j;
}
