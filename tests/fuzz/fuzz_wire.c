/* fuzz_wire.c: libFuzzer target for the frame decoder (proto/wire.c), the server's first line
 * against hostile bytes. Every frame payload a client sends goes through fl_wire_decode.
 *
 * Beyond "no crash, no leak, no UB", it checks three properties:
 * - fl_wire_check is a sound pre-filter: what it accepts, msgpack-c decodes completely;
 * - a decoded object re-packs to bytes that decode again to the same bytes (a fixed point);
 * - fl_wire_get finds every string key of a decoded map (the first occurrence);
 * - fl_wire_decode_in, into one zone kept across inputs as the server keeps it, gives the same
 *   answer and the same object as fl_wire_decode. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stop the run with a message: libFuzzer reports the input as a crash. */
static void fail(const char *what, const struct fl_error *e)
{
    fprintf(stderr, "fuzz_wire: %s%s%s\n", what, e ? ": " : "", e ? e->msg : "");
    abort();
}

/* Pack o into a fresh buffer (the caller destroys sb). */
static void repack(const msgpack_object *o, msgpack_sbuffer *sb)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *o);
}

/* The server's decoder (fl_wire_decode_in, one zone cleared after each frame) agrees with
 * fl_wire_decode: the same return code and message, and an object that packs the same. */
static void check_zone_decode(const uint8_t *data, size_t size, int rc, const struct fl_error *e,
                              const msgpack_object *o)
{
    static msgpack_zone zone;
    static int zone_ok;
    struct fl_error e2;
    msgpack_object o2;
    msgpack_sbuffer a, b;

    if (!zone_ok && !(zone_ok = msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE)))
        fail("out of memory", NULL);
    fl_error_clear(&e2);
    if (fl_wire_decode_in(data, size, &zone, &o2, &e2) != rc || strcmp(e->msg, e2.msg) != 0)
        fail("fl_wire_decode_in does not answer as fl_wire_decode", &e2);
    if (rc == 0) {
        repack(o, &a);
        repack(&o2, &b);
        if (a.size != b.size || memcmp(a.data, b.data, a.size) != 0)
            fail("fl_wire_decode_in decodes another object than fl_wire_decode", NULL);
        msgpack_sbuffer_destroy(&a);
        msgpack_sbuffer_destroy(&b);
    }
    msgpack_zone_clear(&zone);
}

/* Every string key (without NUL) of map is found by fl_wire_get, and at its first position. */
static void check_lookups(const msgpack_object *map)
{
    char key[256];

    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        const msgpack_object *v;
        uint32_t first;

        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= sizeof key ||
            (k->via.str.size && memchr(k->via.str.ptr, '\0', k->via.str.size)))
            continue;
        if (k->via.str.size)
            memcpy(key, k->via.str.ptr, k->via.str.size);
        key[k->via.str.size] = '\0';
        v = fl_wire_get(map, key);
        for (first = 0; first < i; first++) {
            const msgpack_object *kf = &map->via.map.ptr[first].key;
            if (kf->type == MSGPACK_OBJECT_STR && kf->via.str.size == k->via.str.size &&
                (k->via.str.size == 0 || memcmp(kf->via.str.ptr, key, k->via.str.size) == 0))
                break;
        }
        if (v != &map->via.map.ptr[first].val)
            fail("fl_wire_get missed a key of the map", NULL);
        /* Every value, read as a time as the server does with as_of_time. */
        int64_t us;
        (void)fl_wire_read_ts(v, &us);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"id",     "op",    "events", "token", "tenant",
                                       "version", "from", "limit",  "as_of_time", ""};
    msgpack_unpacked u, u2;
    msgpack_sbuffer sb, sb2;
    struct fl_error err;
    int rc, checked;

    if (size >= FL_FRAME_HDR)
        (void)fl_wire_frame_len(data);
    fl_error_clear(&err);
    checked = fl_wire_check(data, size, &err) == 0;
    fl_error_clear(&err);
    rc = fl_wire_decode(data, size, &u, &err);
    check_zone_decode(data, size, rc, &err, &u.data);
    if (rc != 0) {
        if (rc != FL_EBAD_REQUEST || err.code != rc || !err.msg[0])
            fail("a rejected frame must be bad_request with a message", &err);
        if (checked)
            fail("fl_wire_check accepted bytes that msgpack-c could not decode", &err);
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const msgpack_object *v = fl_wire_get(&u.data, keys[i]);
        if (v && u.data.type != MSGPACK_OBJECT_MAP)
            fail("fl_wire_get found a key in a non-map", NULL);
    }
    if (u.data.type == MSGPACK_OBJECT_MAP)
        check_lookups(&u.data);
    else if (fl_wire_get(&u.data, "id") != NULL)
        fail("fl_wire_get on a non-map", NULL);

    /* Re-pack, decode again, re-pack again: the two encodings must be equal. */
    repack(&u.data, &sb);
    fl_error_clear(&err);
    if (fl_wire_decode(sb.data, sb.size, &u2, &err) != 0)
        fail("the re-packed object does not decode", &err);
    repack(&u2.data, &sb2);
    if (sb.size != sb2.size || memcmp(sb.data, sb2.data, sb.size) != 0)
        fail("re-packing is not a fixed point", NULL);
    msgpack_sbuffer_destroy(&sb2);
    msgpack_unpacked_destroy(&u2);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&u);
    return 0;
}
