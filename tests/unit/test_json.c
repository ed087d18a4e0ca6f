/* test_json.c: the CLI's msgpack <-> JSON codec (tools/json.c): integers stay integers, order
 * is kept, timestamps become RFC 3339, bin becomes hex, and what JSON cannot hold is an error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack/timestamp.h>

#include "json.h"

/* Decode sb's one object into u. */
static void unpack(const msgpack_sbuffer *sb, msgpack_unpacked *u)
{
    size_t off = 0;
    msgpack_unpacked_init(u);
    assert_int_equal(msgpack_unpack_next(u, sb->data, sb->size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, sb->size);
}

/* JSON text → msgpack → JSON text (compact). */
static char *round_trip(const char *text, msgpack_unpacked *u, msgpack_sbuffer *sb)
{
    char err[FJSON_ERR_MAX];
    json_error_t je;
    msgpack_packer pk;
    json_t *in = json_loads(text, 0, &je), *out;
    char *s;

    assert_non_null(in);
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    assert_int_equal(fjson_to_msgpack(in, &pk, err), 0);
    unpack(sb, u);
    out = fjson_from_msgpack(&u->data, FJSON_TIME_RFC3339, err);
    assert_non_null(out);
    s = json_dumps(out, JSON_COMPACT);
    json_decref(in);
    json_decref(out);
    return s;
}

static void test_round_trip_keeps_types_and_order(void **state)
{
    const char *text = "{\"z\":1,\"a\":-2,\"m\":\"x\",\"l\":[true,false,null],\"f\":{\"r\":1.5},"
                       "\"e\":\"\",\"big\":9223372036854775807}";
    msgpack_unpacked u;
    msgpack_sbuffer sb;
    char *s = round_trip(text, &u, &sb);

    assert_string_equal(s, text);
    const msgpack_object_kv *kv = u.data.via.map.ptr;
    assert_int_equal(kv[0].val.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(kv[1].val.type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_int_equal(kv[4].val.via.map.ptr[0].val.type, MSGPACK_OBJECT_FLOAT64);
    free(s);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

/* Pack one value with fn and convert it; returns the JSON text or NULL (err set). */
static char *convert(void (*fn)(msgpack_packer *), enum fjson_time tf, char err[FJSON_ERR_MAX])
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    json_t *j;
    char *s = NULL;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fn(&pk);
    unpack(&sb, &u);
    if ((j = fjson_from_msgpack(&u.data, tf, err)) != NULL)
        s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    return s;
}

static void ts64(msgpack_packer *pk)
{
    msgpack_timestamp t = {1795300743, 123456000};
    msgpack_pack_timestamp(pk, &t);
}

static void ts32(msgpack_packer *pk)
{
    msgpack_timestamp t = {0, 0};
    msgpack_pack_timestamp(pk, &t);
}

static void ts96_negative(msgpack_packer *pk)
{
    msgpack_timestamp t = {-1, 999999000}; /* 1969-12-31T23:59:59.999999Z */
    msgpack_pack_timestamp(pk, &t);
}

static void test_timestamps(void **state)
{
    char err[FJSON_ERR_MAX], *s;

    s = convert(ts64, FJSON_TIME_RFC3339, err);
    assert_string_equal(s, "\"2026-11-21T22:39:03.123456Z\"");
    free(s);
    s = convert(ts64, FJSON_TIME_HUMAN, err);
    assert_string_equal(s, "\"2026-11-21 22:39:03.123456\"");
    free(s);
    s = convert(ts32, FJSON_TIME_RFC3339, err);
    assert_string_equal(s, "\"1970-01-01T00:00:00.000000Z\"");
    free(s);
    s = convert(ts96_negative, FJSON_TIME_RFC3339, err);
    assert_string_equal(s, "\"1969-12-31T23:59:59.999999Z\"");
    free(s);
}

static void bin3(msgpack_packer *pk)
{
    msgpack_pack_bin_with_body(pk, "\x00\xff\x10", 3);
}

static void ext5(msgpack_packer *pk)
{
    msgpack_pack_ext_with_body(pk, "\xab", 1, 5);
}

static void test_bin_and_other_ext(void **state)
{
    char err[FJSON_ERR_MAX], *s;

    s = convert(bin3, FJSON_TIME_RFC3339, err);
    assert_string_equal(s, "\"00ff10\"");
    free(s);
    s = convert(ext5, FJSON_TIME_RFC3339, err);
    assert_string_equal(s, "{\"ext\":5,\"hex\":\"ab\"}");
    free(s);
}

static void huge_uint(msgpack_packer *pk)
{
    msgpack_pack_uint64(pk, UINT64_MAX);
}

static void bad_utf8(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "\xc3\x28", 2);
}

static void int_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_int(pk, 1);
    msgpack_pack_int(pk, 2);
}

static void bad_timestamp(msgpack_packer *pk)
{
    msgpack_pack_ext_with_body(pk, "\x01\x02\x03", 3, -1);
}

static void test_what_json_cannot_hold_is_an_error(void **state)
{
    char err[FJSON_ERR_MAX];

    assert_null(convert(huge_uint, FJSON_TIME_RFC3339, err));
    assert_non_null(strstr(err, "18446744073709551615"));
    assert_null(convert(bad_utf8, FJSON_TIME_RFC3339, err));
    assert_non_null(strstr(err, "UTF-8"));
    assert_null(convert(int_key, FJSON_TIME_RFC3339, err));
    assert_non_null(strstr(err, "key"));
    assert_null(convert(bad_timestamp, FJSON_TIME_RFC3339, err));
    assert_non_null(strstr(err, "timestamp"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_keeps_types_and_order),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_bin_and_other_ext),
        cmocka_unit_test(test_what_json_cannot_hold_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
