/* test_corrupt.c: tamper with the stored log and the projections; verify must name the damage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lmdb.h>

#include "hash.h"
#include "record.h"
#include "testutil.h"

/* The store of every case: a flow and 19 updates, seq 1..20. */
static int setup(void **state)
{
    struct fl_error e;
    struct tu_fx *f;

    tu_fx_setup(state);
    f = *state;
    assert_int_equal(tu_append(f->s, "t", "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"f\",\"flow_name\":\"n\"}}", NULL, 0, &e), 0);
    for (int i = 0; i < 19; i++)
        assert_int_equal(tu_appendf(f->s, "t", &e, "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"f\",\"owner\":\"o%d\"}}", i), 0);
    return 0;
}

/* Verify, expecting failure with a problem containing each of the given substrings. */
static void expect_problems(struct fl_store *s, const char *a, const char *b)
{
    json_t *v = tu_verify(s);
    char *text;

    assert_non_null(v);
    assert_true(json_is_false(json_object_get(v, "ok")));
    text = json_dumps(json_object_get(v, "problems"), 0);
    if ((a && !strstr(text, a)) || (b && !strstr(text, b)))
        fail_msg("verify problems %s do not mention \"%s\" and \"%s\"", text, a, b ? b : "");
    free(text);
    json_decref(v);
}

static void test_clean(void **state)
{
    struct tu_fx *f = *state;
    json_t *v = tu_verify(f->s);
    assert_true(json_is_true(json_object_get(v, "ok")));
    assert_int_equal(tu_int(v, "events"), 20);
    assert_int_equal(strlen(tu_str(v, "head_hash")), 64);
    json_decref(v);
}

static void test_flip_byte(void **state)
{
    struct tu_fx *f = *state;
    void *rec;
    size_t len;

    assert_int_equal(fl_store_debug_get_raw(f->s, 5, &rec, &len), 0);
    ((uint8_t *)rec)[len / 2] ^= 0x40;
    assert_int_equal(fl_store_debug_put_raw(f->s, 5, rec, len), 0);
    expect_problems(f->s, "seq 5: checksum mismatch", NULL);
    free(rec);
}

static void test_drop_record(void **state)
{
    struct tu_fx *f = *state;
    assert_int_equal(fl_store_debug_put_raw(f->s, 7, NULL, 0), 0);
    expect_problems(f->s, "seq 7..7 missing", "seq 8: hash chain broken");
}

static void test_swap_records(void **state)
{
    struct tu_fx *f = *state;
    void *a, *b;
    size_t la, lb;

    assert_int_equal(fl_store_debug_get_raw(f->s, 3, &a, &la), 0);
    assert_int_equal(fl_store_debug_get_raw(f->s, 4, &b, &lb), 0);
    assert_int_equal(fl_store_debug_put_raw(f->s, 3, b, lb), 0);
    assert_int_equal(fl_store_debug_put_raw(f->s, 4, a, la), 0);
    expect_problems(f->s, "seq 3: the record says seq 4", "hash chain broken");
    free(a);
    free(b);
}

/* An attacker who edits a record and recomputes its checksum is still caught by the chain. */
static void test_forged_checksum(void **state)
{
    struct tu_fx *f = *state;
    uint8_t *rec;
    size_t len;
    char *p;

    assert_int_equal(fl_store_debug_get_raw(f->s, 10, (void **)&rec, &len), 0);
    p = memmem(rec, len, "o8", 2);
    assert_non_null(p);
    p[1] = '9'; /* owner o8 -> o9, same length */
    fl_hash_checksum(rec, len - 8, rec + len - 8);
    assert_int_equal(fl_store_debug_put_raw(f->s, 10, rec, len), 0);
    expect_problems(f->s, "seq 10: hash chain broken", NULL);
    free(rec);
}

/* A projection edited behind the log's back differs from a rebuild. */
static void test_projection_tamper(void **state)
{
    struct tu_fx *f = *state;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *c;
    MDB_val k, v;

    fl_store_close(f->s);
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "flows", 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &c), 0);
    assert_int_equal(mdb_cursor_get(c, &k, &v, MDB_FIRST), 0);
    uint8_t *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    copy[v.mv_size - 1] ^= 1;
    MDB_val nv = {v.mv_size, copy};
    assert_int_equal(mdb_cursor_put(c, &k, &nv, MDB_CURRENT), 0);
    mdb_cursor_close(c);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(copy);
    f->s = tu_open(f->dir, 0);
    expect_problems(f->s, "projection flows differs from a rebuild", NULL);
    /* a rebuild repairs it */
    struct fl_error e;
    assert_int_equal(fl_store_rebuild(f->s, NULL, &e), 0);
    json_t *vr = tu_verify(f->s);
    assert_true(json_is_true(json_object_get(vr, "ok")));
    json_decref(vr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clean, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_flip_byte, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_drop_record, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_swap_records, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_forged_checksum, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_projection_tamper, setup, tu_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
