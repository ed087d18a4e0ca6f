/* fuzz_json.c: libFuzzer target for the CLI's JSON <-> msgpack conversion (tools/json.c).
 *
 * The input is one line of `flowlog append`'s stdin. It goes the way the CLI sends it:
 * json_loadb (duplicate keys rejected), an object only, fjson_to_msgpack. The packed bytes must
 * then pass the server's frame check unless nested deeper than the wire allows, and converting
 * them back with fjson_from_msgpack must give a JSON value equal to the line's.
 *
 * The same bytes are also read as a msgpack payload and converted to JSON in both time styles,
 * as the CLI does with every reply and pushed event it prints. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stop the run with a message: libFuzzer reports the input as a crash. */
static void fail(const char *what, const char *msg)
{
    fprintf(stderr, "fuzz_json: %s%s%s\n", what, msg ? ": " : "", msg ? msg : "");
    abort();
}

/* How deep v nests (a scalar is 0, [] and {} are 1). */
static int depth_of(const json_t *v)
{
    int d = 0;

    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int c = depth_of(json_array_get(v, i));
            d = c > d ? c : d;
        }
        return d + 1;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c) {
            int cd = depth_of(c);
            d = cd > d ? cd : d;
        }
        return d + 1;
    }
    return 0;
}

/* The CLI's path for one JSON line, and back. */
static void json_line(const uint8_t *data, size_t size)
{
    char err[FJSON_ERR_MAX] = "";
    json_error_t je;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    struct fl_error fe;
    json_t *j, *back;
    int rc;

    j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return;
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rc = fjson_to_msgpack(j, &pk, err);
    if (rc != 0) {
        if (!err[0])
            fail("fjson_to_msgpack failed without a message", NULL);
        goto out;
    }
    fl_error_clear(&fe);
    if (fl_wire_decode(sb.data, sb.size, &u, &fe) != 0) {
        if (depth_of(j) <= FL_WIRE_MAX_DEPTH)
            fail("a converted line does not pass the frame check", fe.msg);
        msgpack_unpacked_destroy(&u);
        goto out;
    }
    back = fjson_from_msgpack(&u.data, FJSON_TIME_RFC3339, err);
    if (!back)
        fail("a converted line does not convert back", err);
    if (!json_equal(j, back))
        fail("JSON -> msgpack -> JSON changed the value", NULL);
    json_decref(back);
    msgpack_unpacked_destroy(&u);
out:
    msgpack_sbuffer_destroy(&sb);
    json_decref(j);
}

/* The CLI's path for a reply: msgpack to JSON, then printed. */
static void msgpack_reply(const uint8_t *data, size_t size)
{
    static const enum fjson_time styles[] = {FJSON_TIME_RFC3339, FJSON_TIME_HUMAN};
    char err[FJSON_ERR_MAX];
    msgpack_unpacked u;
    struct fl_error fe;

    fl_error_clear(&fe);
    if (fl_wire_decode(data, size, &u, &fe) != 0) {
        msgpack_unpacked_destroy(&u);
        return;
    }
    for (size_t i = 0; i < 2; i++) {
        json_t *j = fjson_from_msgpack(&u.data, styles[i], err);
        if (!j) {
            if (!err[0])
                fail("fjson_from_msgpack failed without a message", NULL);
            continue;
        }
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s)
            fail("a converted reply cannot be printed", NULL);
        free(s);
        json_decref(j);
    }
    msgpack_unpacked_destroy(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_line(data, size);
    msgpack_reply(data, size);
    return 0;
}
