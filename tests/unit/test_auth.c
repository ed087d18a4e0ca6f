/* test_auth.c: the tokens file (format, every rejection and its message), file permissions,
 * the first-start admin token, and lookups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"
#include "hash.h"

static const struct auth_entry *find(const struct auth *a, const char *tok)
{
    return auth_lookup(a, tok, strlen(tok));
}

/* Parse text; returns the error code and leaves the message in *err. */
static int parse(struct auth *a, const char *text, struct fl_error *err)
{
    memset(a, 0, sizeof *a);
    fl_error_clear(err);
    return auth_parse(a, text, strlen(text), "tokens", err);
}

static void expect_reject(const char *text, const char *msg_part)
{
    struct auth a;
    struct fl_error err;
    int rc = parse(&a, text, &err);

    if (rc == 0)
        fail_msg("accepted: %s", text);
    assert_int_equal(rc, FL_EBAD_REQUEST);
    if (!strstr(err.msg, msg_part))
        fail_msg("message '%s' does not mention '%s'", err.msg, msg_part);
    assert_null(a.v);
    assert_int_equal(a.n, 0);
}

static void test_parse_valid(void **state)
{
    const char *text = "# flowlog tokens\n"
                       "\n"
                       "reader-token-0123456789 acme:eng-2026 reader\n"
                       "   writer-token-0123456789\tacme:eng-2026\twriter   # trailing comment\n"
                       "admin-token-0123456789 other.tenant_1 admin\r\n"
                       "operator-token-0123456789 * admin\n"
                       "no-newline-at-end-01234 t reader";
    struct auth a;
    struct fl_error err;
    const struct auth_entry *e;

    (void)state;
    assert_int_equal(parse(&a, text, &err), 0);
    assert_int_equal(a.n, 5);
    e = find(&a, "reader-token-0123456789");
    assert_non_null(e);
    assert_string_equal(e->tenant, "acme:eng-2026");
    assert_int_equal(e->role, AUTH_READER);
    e = find(&a, "writer-token-0123456789");
    assert_non_null(e);
    assert_int_equal(e->role, AUTH_WRITER);
    e = find(&a, "admin-token-0123456789");
    assert_non_null(e);
    assert_string_equal(e->tenant, "other.tenant_1");
    assert_int_equal(e->role, AUTH_ADMIN);
    e = find(&a, "operator-token-0123456789");
    assert_non_null(e);
    assert_string_equal(e->tenant, AUTH_OPERATOR_TENANT);
    e = find(&a, "no-newline-at-end-01234");
    assert_non_null(e);
    assert_string_equal(e->tenant, "t");
    /* near misses do not match */
    assert_null(find(&a, "reader-token-012345678"));
    assert_null(find(&a, "reader-token-01234567890"));
    assert_null(find(&a, "Reader-token-0123456789"));
    assert_null(find(&a, ""));
    auth_free(&a);
    assert_null(a.v);
}

static void test_parse_rejects(void **state)
{
    (void)state;
    expect_reject("tok tenant\n", "tokens:1: expected 'TOKEN TENANT ROLE', found 2 fields");
    expect_reject("# c\ntok tenant admin extra\n", "tokens:2: expected 'TOKEN TENANT ROLE'");
    expect_reject("tok tenant superuser\n",
                  "tokens:1: the role (third field) is not one of reader");
    expect_reject("tok ten/ant reader\n", "tokens:1: the tenant (second field) is not valid");
    expect_reject("tok ** reader\n", "the tenant (second field) is not valid");
    expect_reject("tok "
                  "a123456789a123456789a123456789a123456789a123456789a123456789abcde reader\n",
                  "is not valid");
    expect_reject("same-token-0123456789 a reader\nsame-token-0123456789 b admin\n",
                  "tokens:2: this token already appears");
    expect_reject("", "holds no tokens");
    expect_reject("# only comments\n\n   \n", "holds no tokens");
    expect_reject("tok\x01x a reader\n", "printable ASCII");
    expect_reject("t\xc3\xa9k a reader\n", "printable ASCII");
    expect_reject("ok-token-0123456789 a reader\nbad role\n", "tokens:2:");
    /* columns out of order: the message must not quote what may be the token */
    {
        struct auth a;
        struct fl_error err;
        assert_int_not_equal(parse(&a, "acme s3cr3t/t0ken+x reader\n", &err), 0);
        assert_null(strstr(err.msg, "s3cr3t"));
        assert_int_not_equal(parse(&a, "acme reader s3cr3t/t0ken+x\n", &err), 0);
        assert_null(strstr(err.msg, "s3cr3t"));
    }
}

static void test_parse_nul_byte(void **state)
{
    static const char text[] = "tok a reader\n\0tok2 b reader\n";
    struct auth a;
    struct fl_error err;

    (void)state;
    memset(&a, 0, sizeof a);
    fl_error_clear(&err);
    assert_int_equal(auth_parse(&a, text, sizeof text - 1, "tokens", &err), FL_EBAD_REQUEST);
    assert_non_null(strstr(err.msg, "NUL"));
}

static void test_token_limits(void **state)
{
    char line[600];
    struct auth a;
    struct fl_error err;

    (void)state;
    memset(line, 'x', AUTH_TOKEN_MAX);
    snprintf(line + AUTH_TOKEN_MAX, sizeof line - AUTH_TOKEN_MAX, " a reader\n");
    assert_int_equal(parse(&a, line, &err), 0);
    auth_free(&a);
    memset(line, 'x', AUTH_TOKEN_MAX + 1);
    snprintf(line + AUTH_TOKEN_MAX + 1, sizeof line - AUTH_TOKEN_MAX - 1, " a reader\n");
    expect_reject(line, "1..256 printable ASCII");
}

static void test_tenant_valid(void **state)
{
    char long_id[66];

    (void)state;
    assert_true(auth_tenant_valid("acme:eng-2026", 13));
    assert_true(auth_tenant_valid("A.b_c:d-9", 9));
    assert_false(auth_tenant_valid("", 0));
    assert_false(auth_tenant_valid("a b", 3));
    assert_false(auth_tenant_valid("a/b", 3));
    assert_false(auth_tenant_valid("*", 1)); /* only the tokens file may say "operator" */
    assert_false(auth_tenant_valid("caf\xc3\xa9", 5));
    assert_false(auth_tenant_valid("a\0b", 3));
    memset(long_id, 'a', sizeof long_id);
    assert_true(auth_tenant_valid(long_id, 64));
    assert_false(auth_tenant_valid(long_id, 65));
    assert_string_equal(auth_role_name(AUTH_READER), "reader");
    assert_string_equal(auth_role_name(AUTH_WRITER), "writer");
    assert_string_equal(auth_role_name(AUTH_ADMIN), "admin");
}

/* ---- files ---- */

struct fx {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);

    snprintf(f->dir, sizeof f->dir, "/tmp/flowlog-test-auth-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/tokens", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char p[160];

    unlink(f->path);
    snprintf(p, sizeof p, "%s/%s", f->dir, AUTH_ADMIN_TOKEN_FILE);
    unlink(p);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_load_file(void **state)
{
    struct fx *f = *state;
    struct auth a = {0};
    struct fl_error err;

    write_file(f->path, "file-token-0123456789 acme reader\n", 0600);
    fl_error_clear(&err);
    assert_int_equal(auth_load_file(&a, f->path, &err), 0);
    assert_non_null(find(&a, "file-token-0123456789"));
    auth_free(&a);
}

static void test_load_file_permissions(void **state)
{
    struct fx *f = *state;
    static const mode_t bad[] = {0644, 0640, 0604, 0660, 0602, 0620};
    struct auth a = {0};
    struct fl_error err;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(f->path, "file-token-0123456789 acme reader\n", bad[i]);
        fl_error_clear(&err);
        assert_int_not_equal(auth_load_file(&a, f->path, &err), 0);
        if (!strstr(err.msg, "chmod 600") || !strstr(err.msg, f->path))
            fail_msg("mode %04o: unclear message: %s", (unsigned)bad[i], err.msg);
        assert_int_equal(a.n, 0);
    }
    write_file(f->path, "file-token-0123456789 acme reader\n", 0400);
    assert_int_equal(auth_load_file(&a, f->path, &err), 0);
    auth_free(&a);
}

static void test_load_file_missing_or_dir(void **state)
{
    struct fx *f = *state;
    struct auth a = {0};
    struct fl_error err;

    fl_error_clear(&err);
    assert_int_not_equal(auth_load_file(&a, f->path, &err), 0);
    assert_non_null(strstr(err.msg, "cannot open"));
    assert_int_not_equal(auth_load_file(&a, f->dir, &err), 0);
}

static void test_admin_token(void **state)
{
    struct fx *f = *state;
    struct auth a = {0}, b = {0};
    struct fl_error err;
    char path[160], tok[128];
    struct stat st;
    FILE *fp;
    int created = -1;

    fl_error_clear(&err);
    assert_int_equal(auth_load_admin_token(&a, f->dir, &created, &err), 0);
    assert_int_equal(created, 1);
    snprintf(path, sizeof path, "%s/%s", f->dir, AUTH_ADMIN_TOKEN_FILE);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 65); /* 64 hex digits and a newline */
    fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(tok, sizeof tok, fp));
    fclose(fp);
    assert_int_equal(strlen(tok), 65);
    assert_int_equal(strspn(tok, "0123456789abcdef"), 64);
    tok[64] = '\0';
    assert_int_equal(a.n, 1);
    assert_non_null(find(&a, tok));
    assert_string_equal(find(&a, tok)->tenant, "default");
    assert_int_equal(find(&a, tok)->role, AUTH_ADMIN);

    /* second start: the same token is read back, nothing is rewritten */
    assert_int_equal(auth_load_admin_token(&b, f->dir, &created, &err), 0);
    assert_int_equal(created, 0);
    assert_non_null(find(&b, tok));
    auth_free(&a);
    auth_free(&b);

    /* a token file others can read is refused */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_not_equal(auth_load_admin_token(&a, f->dir, &created, &err), 0);
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_int_equal(a.n, 0);

    /* an empty one is explained */
    write_file(path, "\n", 0600);
    assert_int_not_equal(auth_load_admin_token(&a, f->dir, &created, &err), 0);
    assert_non_null(strstr(err.msg, "delete it"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_nul_byte),
        cmocka_unit_test(test_token_limits),
        cmocka_unit_test(test_tenant_valid),
        cmocka_unit_test_setup_teardown(test_load_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_file_permissions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_file_missing_or_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_token, setup, teardown),
    };

    if (fl_hash_init() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
