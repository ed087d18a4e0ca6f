/* test_corrupt.c: tamper with the stored log and the projections; verify must name the damage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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
    /* the scratch rebuild walks the log with a cursor: the gap is named, not skipped */
    expect_problems(f->s, "rebuild from the log failed: seq 7: record missing", NULL);
}

/* A rebuild names the first missing record, at the start of the log or at its end. */
static void test_rebuild_missing_record(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;

    assert_int_equal(fl_store_debug_put_raw(f->s, 20, NULL, 0), 0);
    assert_int_not_equal(fl_store_rebuild(f->s, NULL, &e), 0);
    assert_non_null(strstr(e.msg, "seq 20: record missing"));
    assert_int_equal(fl_store_debug_put_raw(f->s, 1, NULL, 0), 0);
    assert_int_not_equal(fl_store_rebuild(f->s, NULL, &e), 0);
    assert_non_null(strstr(e.msg, "seq 1: record missing"));
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

/* A tenant's verify checks the whole store but names only the problems at its own records
 * (the others could name other tenants' ids): the forged record is t's, so t is told which
 * seq, and u only that the store has a problem it is not shown. */
static void test_tenant_scope(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;
    uint8_t *rec;
    size_t len;
    char *p, *text;
    json_t *v;

    assert_int_equal(
        tu_append(f->s, "u",
                  "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"g\",\"flow_name\":\"n\"}}",
                  NULL, 0, &e),
        0);
    v = tu_verify_as(f->s, "u");
    assert_true(json_is_true(json_object_get(v, "ok")));
    assert_string_equal(tu_str(v, "scope"), "tenant");
    assert_int_equal(tu_int(v, "events"), 1);
    assert_int_equal(tu_int(v, "head_seq"), 21);
    json_decref(v);
    assert_int_equal(fl_store_debug_get_raw(f->s, 10, (void **)&rec, &len), 0);
    p = memmem(rec, len, "o8", 2);
    assert_non_null(p);
    p[1] = '9';
    fl_hash_checksum(rec, len - 8, rec + len - 8);
    assert_int_equal(fl_store_debug_put_raw(f->s, 10, rec, len), 0);
    free(rec);
    v = tu_verify_as(f->s, "t");
    assert_true(json_is_false(json_object_get(v, "ok")));
    assert_int_equal(tu_int(v, "events"), 20);
    text = json_dumps(json_object_get(v, "problems"), 0);
    assert_non_null(strstr(text, "seq 10: hash chain broken"));
    free(text);
    json_decref(v);
    v = tu_verify_as(f->s, "u");
    assert_true(json_is_false(json_object_get(v, "ok")));
    assert_int_equal(json_array_size(json_object_get(v, "problems")), 1);
    text = json_dumps(json_object_get(v, "problems"), 0);
    assert_null(strstr(text, "seq 10"));
    assert_non_null(strstr(text, "an operator's verify names them"));
    free(text);
    json_decref(v);
    v = tu_verify(f->s); /* the store-wide report names it */
    assert_string_equal(tu_str(v, "scope"), "store");
    assert_int_equal(tu_int(v, "events"), 21);
    json_decref(v);
    expect_problems(f->s, "seq 10: hash chain broken", NULL);
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
    tu_verify_ok(f->s);
}

/* Every key and value of the first flow's space in "flows" (the store must be closed). */
static char *flow_space(const char *dir, size_t *len)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *c;
    MDB_val k, v;
    uint8_t first[8];
    char *out = NULL;
    size_t n = 0;
    int rc;

    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "flows", 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &c), 0);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (n == 0)
            memcpy(first, k.mv_data, 8);
        if (memcmp(first, k.mv_data, 8) != 0)
            break;
        out = realloc(out, n + k.mv_size + v.mv_size);
        memcpy(out + n, k.mv_data, k.mv_size);
        memcpy(out + n + k.mv_size, v.mv_data, v.mv_size);
        n += k.mv_size + v.mv_size;
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    *len = n;
    return out;
}

/* Replace the flow's idx-th stored row (current rows and row versions) with a byte that does
 * not decode; 0 if there is none. */
static int damage_current_row(const char *dir, int idx)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, seen = 0, done = 0;
    uint8_t first[8];
    int have_first = 0;

    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "flows", 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &c), 0);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && !done;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 9)
            continue;
        if (!have_first) {
            memcpy(first, k.mv_data, 8);
            have_first = 1;
        }
        /* current rows ('C'), then the row versions behind as-of ('S' seq table pk) */
        uint8_t kind = ((uint8_t *)k.mv_data)[8];
        if (memcmp(first, k.mv_data, 8) != 0 || !(kind == 'C' || (kind == 'S' && k.mv_size > 17)) ||
            seen++ != idx)
            continue;
        uint8_t junk = 0xc1; /* never valid msgpack: the row cannot decode */
        MDB_val nv = {1, &junk};
        assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
        done = 1;
        break;
    }
    mdb_cursor_close(c);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    return done;
}

/* A rollback that meets a damaged stored row fails with internal, perhaps after it wrote other
 * rows: in a group commit beside another client's append (no nested transaction for one
 * event), the group is redone without it, so the flow keeps exactly what it had while the
 * other append commits. Each of the flow's stored rows is damaged in turn, each time in a
 * fresh store, so that the damage is met after some writes whatever order the rollback takes. */
static void test_damaged_row_in_group(void **state)
{
    int failures = 0;

    (void)state;
    for (int idx = 0;; idx++) {
        char *dir = tu_tmpdir();
        struct fl_store *s = tu_open(dir, 0);
        struct fl_error e;

        assert_int_equal(tu_append(s, "t", "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"f\",\"flow_name\":\"n\"}}", NULL, 0, &e), 0);
        assert_int_equal(tu_append(s, "t", "["
            "{\"type\":\"run_started\",\"data\":{\"run_id\":\"r\",\"flow_id\":\"f\",\"job_run_id\":\"1\"}},"
            "{\"type\":\"iteration_step\",\"data\":{\"run_id\":\"r\",\"iteration_num\":1,\"step\":\"generate_code\",\"step_status\":\"RUNNING\"}},"
            "{\"type\":\"patch\",\"data\":{\"run_id\":\"r\",\"iteration_num\":1,\"artifact_ref\":\"a.py\"}}]",
            NULL, 0, &e), 0);
        fl_store_close(s);
        if (!damage_current_row(dir, idx)) {
            tu_rmdir(dir);
            free(dir);
            break;
        }
        size_t l0, l1;
        char *before = flow_space(dir, &l0);
        s = tu_open(dir, 0);
        const char *const tenants[2] = {"t", "t"};
        const char *const texts[2] = {
            "{\"type\":\"flow_rollback\",\"data\":{\"flow_id\":\"f\",\"to_seq\":1,\"reason\":\"x\"}}",
            "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"other\",\"flow_name\":\"n\"}}"};
        int codes[2];
        uint64_t seqs[2];
        assert_int_equal(tu_commit_group(s, 2, tenants, texts, codes, seqs), 0);
        assert_int_equal(codes[1], 0); /* the other client's append is committed */
        if (codes[0]) {
            assert_int_equal(codes[0], FL_EINTERNAL);
            assert_int_equal(fl_store_head(s), 5);
            assert_int_equal(seqs[1], 5);
            fl_store_close(s);
            s = NULL;
            char *after = flow_space(dir, &l1);
            assert_int_equal(l0, l1); /* nothing of the failed rollback was kept */
            assert_memory_equal(before, after, l0);
            free(after);
            failures++;
        }
        free(before);
        fl_store_close(s);
        tu_rmdir(dir);
        free(dir);
    }
    assert_true(failures > 0);
    printf("# %d damaged rows made the rollback fail; the flow was left as it was each time\n",
           failures);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clean, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_flip_byte, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_drop_record, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_rebuild_missing_record, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_swap_records, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_forged_checksum, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_projection_tamper, setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_tenant_scope, setup, tu_fx_teardown),
        cmocka_unit_test(test_damaged_row_in_group),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
