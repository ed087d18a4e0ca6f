/* test_event.c: the I/O-free parts: event form validation, canonical encoding, the hostile
 * msgpack pre-check, RFC 3339 time, UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include <xxhash.h>

#include "event.h"
#include "hash.h"
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

/* The first key of the packed map m. */
static void first_key(const char *m, size_t n, const char *want)
{
    msgpack_unpacked up;
    size_t off = 0;

    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, m, n, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(up.data.type, MSGPACK_OBJECT_MAP);
    assert_true(fl_mp_streq(&up.data.via.map.ptr[0].key, want));
    msgpack_unpacked_destroy(&up);
}

/* The data is kept as it was appended (key order, nulls: CONTRACT.md 6), while the payload hash
 * (idempotency) is of the canonical form: the same for any key order, null or absent. */
static void test_data_as_given(void **state)
{
    msgpack_sbuffer a, b, c;
    struct fl_event ea, eb, ec;
    struct fl_error e;
    msgpack_packer pk;

    (void)state;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    msgpack_sbuffer_init(&c);
    pack_ev(&a, "flow_registered", 2, (const char *[]){"flow_id", "f", "flow_name", "n"});
    pack_ev(&b, "flow_registered", 2, (const char *[]){"flow_name", "n", "flow_id", "f"});
    /* {"type": "flow_registered", "data": {"server": nil, "flow_id": "f", "flow_name": "n"}} */
    msgpack_packer_init(&pk, &c, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    fl_wire_pack_cstr(&pk, "type");
    fl_wire_pack_cstr(&pk, "flow_registered");
    fl_wire_pack_cstr(&pk, "data");
    msgpack_pack_map(&pk, 3);
    fl_wire_pack_cstr(&pk, "server");
    msgpack_pack_nil(&pk);
    fl_wire_pack_cstr(&pk, "flow_id");
    fl_wire_pack_cstr(&pk, "f");
    fl_wire_pack_cstr(&pk, "flow_name");
    fl_wire_pack_cstr(&pk, "n");
    assert_int_equal(parse(&a, &ea, &e), 0);
    assert_int_equal(parse(&b, &eb, &e), 0);
    assert_int_equal(parse(&c, &ec, &e), 0);
    assert_memory_equal(ea.payload_hash, eb.payload_hash, 16);
    assert_memory_equal(ea.payload_hash, ec.payload_hash, 16);
    first_key(ea.data, ea.data_len, "flow_id");
    first_key(eb.data, eb.data_len, "flow_name");
    first_key(ec.data, ec.data_len, "server");
    assert_int_equal(eb.data_len, ea.data_len);
    assert_int_equal(ec.data_len, ea.data_len + 8); /* "server": nil kept: 7 + 1 bytes */
    assert_false(fl_event_get(&ec, "server")->set); /* null is absent for everything else */
    fl_event_free(&ea);
    fl_event_free(&eb);
    fl_event_free(&ec);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
    msgpack_sbuffer_destroy(&c);
}

/* Integers of 2^63 and over are refused with the range they missed, not "got an integer". */
static void test_huge_integers(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct fl_event ev;
    struct fl_error e;

    (void)state;
    /* {"type": "flow_updated", "expected_version": 2^63, "data": {"flow_id": "f"}} */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    fl_wire_pack_cstr(&pk, "type");
    fl_wire_pack_cstr(&pk, "flow_updated");
    fl_wire_pack_cstr(&pk, "expected_version");
    msgpack_pack_uint64(&pk, 1ull << 63);
    fl_wire_pack_cstr(&pk, "data");
    msgpack_pack_map(&pk, 1);
    fl_wire_pack_cstr(&pk, "flow_id");
    fl_wire_pack_cstr(&pk, "f");
    assert_int_equal(parse(&sb, &ev, &e), FL_EBAD_REQUEST);
    assert_non_null(strstr(e.msg, "expected_version: 9223372036854775808 is outside 0.."));
    msgpack_sbuffer_destroy(&sb);
    /* {"type": "flow_rollback", "data": {"flow_id": "f", "to_seq": 2^64-1, "reason": "r"}} */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    fl_wire_pack_cstr(&pk, "type");
    fl_wire_pack_cstr(&pk, "flow_rollback");
    fl_wire_pack_cstr(&pk, "data");
    msgpack_pack_map(&pk, 3);
    fl_wire_pack_cstr(&pk, "flow_id");
    fl_wire_pack_cstr(&pk, "f");
    fl_wire_pack_cstr(&pk, "to_seq");
    msgpack_pack_uint64(&pk, UINT64_MAX);
    fl_wire_pack_cstr(&pk, "reason");
    fl_wire_pack_cstr(&pk, "r");
    assert_int_equal(parse(&sb, &ev, &e), FL_EBAD_REQUEST);
    assert_non_null(strstr(e.msg, "data.to_seq: 18446744073709551615 is outside 1.."));
    msgpack_sbuffer_destroy(&sb);
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
    /* scrubbing keeps every valid sequence and makes each stray byte a '?' */
    char sc[] = "a\xff\xc3\xa9\xe2\x82 \xc0\xaf\xf0\x9f\x98\x80\xe2";
    fl_utf8_scrub(sc, sizeof sc - 1);
    assert_string_equal(sc, "a?\xc3\xa9?? ??\xf0\x9f\x98\x80?");
    assert_true(fl_utf8_valid(sc, strlen(sc)));
    /* ASCII goes 32 and eight bytes a step: a sequence, good or bad, at every offset and
     * length */
    for (size_t len = 1; len <= 100; len++) {
        for (size_t at = 0; at < len; at++) {
            char b[104];
            memset(b, 'a', sizeof b);
            b[at] = (char)0xC0; /* never valid */
            assert_false(fl_utf8_valid(b, len));
            if (at + 1 < len) {
                b[at] = (char)0xC3, b[at + 1] = (char)0xA9; /* e-acute */
                assert_true(fl_utf8_valid(b, len));
            } else {
                b[at] = (char)0xC3; /* cut short by the end */
                assert_false(fl_utf8_valid(b, len));
            }
        }
    }
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
    /* Days that the month does not have, and offsets beyond a day's hours (both were taken,
     * Feb 30 read as a day of March). */
    assert_int_equal(fl_time_parse("2026-02-29T00:00:00Z", &us), -1);
    assert_int_equal(fl_time_parse("2026-02-30T11:50:12Z", &us), -1);
    assert_int_equal(fl_time_parse("2026-04-31T00:00:00Z", &us), -1);
    assert_int_equal(fl_time_parse("1900-02-29T00:00:00Z", &us), -1);
    assert_int_equal(fl_time_parse("2028-02-29T00:00:00Z", &us), 0);
    assert_int_equal(fl_time_parse("2000-02-29T00:00:00Z", &us), 0);
    assert_int_equal(fl_time_parse("2026-12-31T23:59:59Z", &us), 0);
    assert_int_equal(fl_time_parse("2026-12-07T11:50:12+25:00", &us), -1);
    assert_int_equal(fl_time_parse("2026-12-07T11:50:12-01:60", &us), -1);
    assert_int_equal(fl_time_parse("2026-12-07T11:50:12+23:59", &us), 0);
    assert_int_equal(us, 1796644212000000LL - (23 * 3600 + 59 * 60) * 1000000LL);
    fl_time_format(0, buf);
    assert_string_equal(buf, "1970-01-01T00:00:00.000000Z");
}

/* The in-place packers of util.h must write exactly what msgpack-c writes: the stored records
 * and the payload hashes over them depend on it. Every size class boundary, and a seeded run
 * of random values. */
static void expect_same(msgpack_sbuffer *sb, const uint8_t *mine, size_t n, size_t len_said)
{
    assert_int_equal(n, sb->size);
    assert_int_equal(len_said, sb->size);
    assert_memory_equal(mine, sb->data, n);
    msgpack_sbuffer_clear(sb);
}

static void check_uint(msgpack_sbuffer *sb, msgpack_packer *pk, uint64_t v)
{
    uint8_t b[16];
    msgpack_pack_uint64(pk, v);
    expect_same(sb, b, fl_mp_put_uint(b, v), fl_mp_uint_len(v));
}

static void check_int(msgpack_sbuffer *sb, msgpack_packer *pk, int64_t v)
{
    uint8_t b[16];
    msgpack_pack_int64(pk, v);
    expect_same(sb, b, fl_mp_put_int(b, v), fl_mp_int_len(v));
}

static void check_headers(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t n)
{
    uint8_t b[16];
    msgpack_pack_map(pk, n);
    expect_same(sb, b, fl_mp_put_map(b, n), fl_mp_map_len(n));
    msgpack_pack_array(pk, n);
    expect_same(sb, b, fl_mp_put_array(b, n), fl_mp_map_len(n));
    msgpack_pack_str(pk, n);
    expect_same(sb, b, fl_mp_put_str(b, n), fl_mp_str_len(n));
}

static void test_packers_match_msgpack_c(void **state)
{
    const uint64_t edges[] = {0, 1, 15, 16, 31, 32, 127, 128, 255, 256, 65535, 65536,
                              4294967295ull, 4294967296ull, UINT64_MAX};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint64_t x = 88172645463325252ull; /* xorshift64, fixed seed: reproducible */

    (void)state;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        for (int d = -1; d <= 1; d++) {
            uint64_t v = edges[i] + (uint64_t)(int64_t)d;
            check_uint(&sb, &pk, v);
            check_int(&sb, &pk, (int64_t)v);
            check_int(&sb, &pk, -(int64_t)(v & INT64_MAX));
            if (v <= UINT32_MAX)
                check_headers(&sb, &pk, (uint32_t)v);
        }
    }
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t v = x >> (x & 63); /* every magnitude */
        check_uint(&sb, &pk, v);
        check_int(&sb, &pk, (int64_t)v);
        check_headers(&sb, &pk, (uint32_t)(v & 0x3ffff));
    }
    msgpack_sbuffer_destroy(&sb);
}

/* fl_hash_payload is xxh3-128 of a, a NUL and b, as a stream: whether it hashes a copy in one
 * call (small payloads) or streams, the (stored) hashes must be these. */
static void test_payload_hash(void **state)
{
    static unsigned char data[5000];
    const char *types[] = {"", "patch", "human_resolution"};
    uint8_t got[16];

    (void)state;
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 131 + 7);
    for (size_t t = 0; t < 3; t++) {
        for (size_t n = 0; n < sizeof data; n += n < 300 ? 1 : 37) {
            XXH3_state_t *st = XXH3_createState();
            XXH128_canonical_t c;

            assert_non_null(st);
            assert_int_equal(XXH3_128bits_reset(st), XXH_OK);
            assert_int_equal(XXH3_128bits_update(st, types[t], strlen(types[t])), XXH_OK);
            assert_int_equal(XXH3_128bits_update(st, "", 1), XXH_OK);
            assert_int_equal(XXH3_128bits_update(st, data, n), XXH_OK);
            XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
            XXH3_freeState(st);
            fl_hash_payload(types[t], strlen(types[t]), data, n, got);
            assert_memory_equal(got, c.digest, 16);
        }
    }
}

/* The schema's stored name lengths are the names' lengths (keys are matched by them). */
static void test_schema_lengths(void **state)
{
    (void)state;
    for (int t = 0; t < FL_EV_COUNT; t++) {
        const struct fl_event_def *d = &fl_event_defs[t];
        assert_int_equal(d->name_len, strlen(d->name));
        assert_int_equal(fl_event_type_from_name(d->name, d->name_len), t);
        for (size_t i = 0; i < d->nfields; i++)
            assert_int_equal(d->fields[i].len, strlen(d->fields[i].name));
    }
    assert_int_equal(fl_event_type_from_name("patc", 4), -1);
    assert_int_equal(fl_event_type_from_name("", 0), -1);
    assert_int_equal(fl_event_type_from_name(NULL, 0), -1);
}

/* fl_wire_put_ts against msgpack_pack_timestamp of the same instant (sec, nsec as the reply
 * packing did before it packed in place). */
static void check_ts(msgpack_sbuffer *sb, msgpack_packer *pk, int64_t us)
{
    msgpack_timestamp t;
    int64_t sec = us / 1000000, rem = us % 1000000;
    uint8_t b[FL_WIRE_TS_MAX + 1];
    size_t n;

    if (rem < 0) {
        rem += 1000000;
        sec -= 1;
    }
    t.tv_sec = sec;
    t.tv_nsec = (uint32_t)(rem * 1000);
    sb->size = 0;
    msgpack_pack_timestamp(pk, &t);
    n = fl_wire_put_ts(b, us);
    assert_true(n <= FL_WIRE_TS_MAX);
    assert_int_equal(n, sb->size);
    assert_memory_equal(b, sb->data, n);
    sb->size = 0;
    fl_wire_pack_ts(pk, us);
    assert_int_equal(n, sb->size);
    assert_memory_equal(b, sb->data, n);
}

/* The in-place reply packers write what msgpack-c's packer would. */
static void test_put_matches_msgpack_c(void **state)
{
    const int64_t edges[] = {0, 1, 999999, 1000000, 4294967295LL * 1000000, 4294967296LL * 1000000,
                             (1LL << 34) * 1000000 - 1, (1LL << 34) * 1000000, INT64_MAX,
                             INT64_MIN, -1, -1000000, -1000001, 1733337600123456LL};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint64_t x = 88172645463325252ull;
    uint8_t b[FL_WIRE_OK_HEAD_MAX];
    char *p;

    (void)state;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        for (int64_t d = -1; d <= 1; d++)
            check_ts(&sb, &pk, (edges[i] == INT64_MAX && d > 0) || (edges[i] == INT64_MIN && d < 0)
                                   ? edges[i] : edges[i] + d);
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t id = x >> (x & 63);
        int64_t us = (int64_t)(id & INT64_MAX);
        check_ts(&sb, &pk, (x & 64) ? -us : us);
        sb.size = 0;
        msgpack_pack_map(&pk, 3);
        fl_wire_pack_cstr(&pk, "id");
        msgpack_pack_uint64(&pk, id);
        fl_wire_pack_cstr(&pk, "ok");
        msgpack_pack_true(&pk);
        fl_wire_pack_cstr(&pk, "result");
        assert_int_equal(fl_wire_put_ok_head(b, id), sb.size);
        assert_memory_equal(b, sb.data, sb.size);
    }
    sb.size = 0;
    assert_non_null(p = fl_wire_reserve(&sb, 100000));
    assert_ptr_equal(p, sb.data);
    assert_true(sb.alloc >= 100000);
    sb.size = 99990;
    assert_non_null(p = fl_wire_reserve(&sb, 10));
    assert_ptr_equal(p, sb.data + 99990);
    assert_null(fl_wire_reserve(&sb, SIZE_MAX - 10));
    msgpack_sbuffer_destroy(&sb);
}

/* A scan_verdict whose findings_json is the n bytes at j. */
static int parse_findings(const char *j, size_t n, struct fl_error *e)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct fl_event ev;
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    fl_wire_pack_cstr(&pk, "type");
    fl_wire_pack_cstr(&pk, "scan_verdict");
    fl_wire_pack_cstr(&pk, "data");
    msgpack_pack_map(&pk, 5);
    fl_wire_pack_cstr(&pk, "run_id");
    fl_wire_pack_cstr(&pk, "r1");
    fl_wire_pack_cstr(&pk, "iteration_num");
    msgpack_pack_int(&pk, 1);
    fl_wire_pack_cstr(&pk, "artifact_ref");
    fl_wire_pack_cstr(&pk, "a.py");
    fl_wire_pack_cstr(&pk, "scan_status");
    fl_wire_pack_cstr(&pk, "PASSED");
    fl_wire_pack_cstr(&pk, "findings_json");
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, j, n);
    fl_error_clear(e);
    rc = parse(&sb, &ev, e);
    if (rc == 0)
        fl_event_free(&ev);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* findings_json must be one JSON value (RFC 8259, any value at the top) and nothing more. */
static void test_findings_json(void **state)
{
    static const char *const good[] = {
        "{}", "[]", "0", "-0.5e10", "\"s\"", "null", "true", "false",
        " {\"a\": [1, 2.5, {\"b\": null}], \"c\": \"\\u00e9\\n\"}\n",
        "123456789012345678901234567890", /* valid JSON, wider than any integer type */
        "{\"a\":1,\"a\":2}",             /* duplicate keys: valid JSON */
        "\"\\u0000\"",
    };
    static const char *const bad[] = {
        "",       "   ",    "{",     "{bad",  "[1,]",        "{} {}",        "{} x",
        "01",     "'a'",    "NaN",   "{\"a\":1,}", "\"open", "/* c */ {}", "[\"\x01\"]",
        "{\"a\" 1}", "[1 2]", "tru", "\"\\x\"",
    };
    struct fl_error e;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        if (parse_findings(good[i], strlen(good[i]), &e) != 0)
            fail_msg("refused valid JSON %s: %s", good[i], e.msg);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (parse_findings(bad[i], strlen(bad[i]), &e) != FL_EBAD_REQUEST)
            fail_msg("accepted invalid JSON [%s]", bad[i]);
        assert_non_null(strstr(e.msg, "data.findings_json: is not valid JSON"));
        assert_non_null(strstr(e.msg, "(at byte "));
    }
    /* the byte named is where the parser stopped, right after the token it refused */
    assert_int_equal(parse_findings("[1,]", 4, &e), FL_EBAD_REQUEST);
    assert_non_null(strstr(e.msg, "(at byte 4)"));
    assert_int_equal(parse_findings("{\"a\":1} x", 9, &e), FL_EBAD_REQUEST);
    assert_non_null(strstr(e.msg, "trailing garbage (at byte 9)"));
    /* deep nesting is no recursion: 100,000 levels parse, one short is refused */
    size_t depth = 100000;
    char *deep = malloc(2 * depth);
    assert_non_null(deep);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    assert_int_equal(parse_findings(deep, 2 * depth, &e), 0);
    assert_int_equal(parse_findings(deep, 2 * depth - 1, &e), FL_EBAD_REQUEST);
    free(deep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_as_given),
        cmocka_unit_test(test_huge_integers),
        cmocka_unit_test(test_bad_utf8),
        cmocka_unit_test(test_wire_check_hostile),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_packers_match_msgpack_c),
        cmocka_unit_test(test_put_matches_msgpack_c),
        cmocka_unit_test(test_schema_lengths),
        cmocka_unit_test(test_payload_hash),
        cmocka_unit_test(test_findings_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
