/* test_event.c: the I/O-free parts: event form validation, canonical encoding, the hostile
 * msgpack pre-check, RFC 3339 time, UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"
#include "util.h"
#include "wire.h"

/* Pack {"type": t, "data": {k: v}} where v is a string. */
static void pack_ev(msgpack_sbuffer *sb, const char *type, int n, const char *const *kv)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    fl_wire_pack_cstr(&pk, "type");
    fl_wire_pack_cstr(&pk, type);
    fl_wire_pack_cstr(&pk, "data");
    msgpack_pack_map(&pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        fl_wire_pack_cstr(&pk, kv[2 * i]);
        fl_wire_pack_cstr(&pk, kv[2 * i + 1]);
    }
}

static int parse(msgpack_sbuffer *sb, struct fl_event *ev, struct fl_error *e)
{
    msgpack_unpacked up;
    size_t off = 0;
    int rc;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb->data, sb->size, &off), MSGPACK_UNPACK_SUCCESS);
    rc = fl_event_parse(&up.data, NULL, ev, e);
    msgpack_unpacked_destroy(&up);
    return rc;
}

static void test_canonical_order(void **state)
{
    msgpack_sbuffer a, b;
    struct fl_event ea, eb;
    struct fl_error e;

    (void)state;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    pack_ev(&a, "flow_registered", 2, (const char *[]){"flow_id", "f", "flow_name", "n"});
    pack_ev(&b, "flow_registered", 2, (const char *[]){"flow_name", "n", "flow_id", "f"});
    assert_int_equal(parse(&a, &ea, &e), 0);
    assert_int_equal(parse(&b, &eb, &e), 0);
    assert_int_equal(ea.data_len, eb.data_len);
    assert_memory_equal(ea.data, eb.data, ea.data_len);
    assert_memory_equal(ea.payload_hash, eb.payload_hash, 16);
    fl_event_free(&ea);
    fl_event_free(&eb);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

static void test_bad_utf8(void **state)
{
    msgpack_sbuffer a;
    struct fl_event ev;
    struct fl_error e;

    (void)state;
    msgpack_sbuffer_init(&a);
    pack_ev(&a, "flow_registered", 2, (const char *[]){"flow_id", "f\xc3\x28", "flow_name", "n"});
    assert_int_equal(parse(&a, &ev, &e), FL_EBAD_REQUEST);
    assert_non_null(strstr(e.msg, "flow_id"));
    msgpack_sbuffer_destroy(&a);
    assert_true(fl_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    assert_false(fl_utf8_valid("\xc0\xaf", 2));          /* overlong */
    assert_false(fl_utf8_valid("\xed\xa0\x80", 3));      /* surrogate */
    assert_false(fl_utf8_valid("\xf4\x90\x80\x80", 4));  /* > U+10FFFF */
    assert_false(fl_utf8_valid("\xe2\x82", 2));          /* truncated */
}

static void test_wire_check_hostile(void **state)
{
    struct fl_error e;
    msgpack_unpacked up;
    (void)state;
    /* map32 declaring 2^32-1 entries with 5 bytes sent */
    assert_int_equal(fl_wire_check("\xdf\xff\xff\xff\xff", 5, &e), FL_EBAD_REQUEST);
    /* array32 declaring 268M elements */
    assert_int_equal(fl_wire_check("\xdd\x10\x00\x00\x00\x01", 6, &e), FL_EBAD_REQUEST);
    /* str32 declaring 4 GiB */
    assert_int_equal(fl_wire_check("\xdb\xff\xff\xff\xff" "abc", 8, &e), FL_EBAD_REQUEST);
    /* never-used byte */
    assert_int_equal(fl_wire_check("\xc1", 1, &e), FL_EBAD_REQUEST);
    /* trailing bytes */
    assert_int_equal(fl_wire_check("\x80\x80", 2, &e), FL_EBAD_REQUEST);
    assert_non_null(strstr(e.msg, "trailing"));
    /* truncated */
    assert_int_equal(fl_wire_check("\x82\xa1" "a", 3, &e), FL_EBAD_REQUEST);
    /* 100-deep nesting */
    char deep[101];
    memset(deep, 0x91, 100);
    deep[100] = (char)0xc0;
    assert_int_equal(fl_wire_check(deep, 101, &e), FL_EBAD_REQUEST);
    assert_non_null(strstr(e.msg, "nesting"));
    /* 16 deep is fine */
    assert_int_equal(fl_wire_check(deep + 85, 16, &e), 0);
    /* a normal frame decodes */
    assert_int_equal(fl_wire_decode("\x81\xa2id\x07", 5, &up, &e), 0);
    assert_int_equal(fl_wire_get(&up.data, "id")->via.u64, 7);
    assert_null(fl_wire_get(&up.data, "op"));
    msgpack_unpacked_destroy(&up);
    /* random bytes never crash the check */
    srand(42);
    for (int i = 0; i < 20000; i++) {
        unsigned char buf[64];
        size_t n = 1 + (size_t)(rand() % 64);
        for (size_t k = 0; k < n; k++)
            buf[k] = (unsigned char)rand();
        /* whatever the pre-check accepts, msgpack-c must decode completely */
        int checked = fl_wire_check(buf, n, &e);
        int decoded = fl_wire_decode(buf, n, &up, &e);
        assert_int_equal(checked, decoded);
        msgpack_unpacked_destroy(&up);
    }
}

static void test_time(void **state)
{
    char buf[32];
    int64_t us;
    (void)state;
    fl_time_format(1795299543123456LL, buf);
    assert_string_equal(buf, "2026-11-21T22:19:03.123456Z");
    assert_int_equal(fl_time_parse("2026-11-21T22:19:03.123456Z", &us), 0);
    assert_int_equal(us, 1795299543123456LL);
    assert_int_equal(fl_time_parse("2026-11-21T23:19:03.123456+01:00", &us), 0);
    assert_int_equal(us, 1795299543123456LL);
    assert_int_equal(fl_time_parse("2026-11-21T22:19:03Z", &us), 0);
    assert_int_equal(us, 1795299543000000LL);
    assert_int_equal(fl_time_parse("2026-11-21", &us), -1);
    assert_int_equal(fl_time_parse("2026-13-21T22:19:03Z", &us), -1);
    assert_int_equal(fl_time_parse("2026-11-21T22:19:03.Z", &us), -1);
    fl_time_format(0, buf);
    assert_string_equal(buf, "1970-01-01T00:00:00.000000Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_order),
        cmocka_unit_test(test_bad_utf8),
        cmocka_unit_test(test_wire_check_hostile),
        cmocka_unit_test(test_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
