/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <ftw.h>
#include <msgpack/timestamp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

#include "wire.h"

char *tu_tmpdir(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *p;

    if (asprintf(&p, "%s/flowlog-test-XXXXXX", base) < 0 || !mkdtemp(p)) {
        fprintf(stderr, "cannot create a temp dir\n");
        abort();
    }
    return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tu_rmdir(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct fl_store *tu_open(const char *dir, int durable)
{
    struct fl_store_opts o = {0};
    struct fl_store *s;
    struct fl_error e;

    o.dir = dir;
    o.nosync = !durable;
    fl_error_clear(&e);
    if (fl_store_open(&s, &o, &e) != 0) {
        fprintf(stderr, "fl_store_open(%s): %s\n", dir, e.msg);
        abort();
    }
    return s;
}

int tu_fx_setup(void **state)
{
    struct tu_fx *f = calloc(1, sizeof *f);

    if (!f)
        abort();
    f->dir = tu_tmpdir();
    f->s = tu_open(f->dir, 0);
    *state = f;
    return 0;
}

int tu_fx_teardown(void **state)
{
    struct tu_fx *f = *state;

    fl_store_close(f->s);
    tu_rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

void tu_pack_json(msgpack_packer *pk, const json_t *j)
{
    const char *k;
    json_t *v;
    size_t i;

    switch (json_typeof(j)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(j));
        json_object_foreach((json_t *)j, k, v) {
            fl_wire_pack_cstr(pk, k);
            tu_pack_json(pk, v);
        }
        break;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, v) tu_pack_json(pk, v);
        break;
    case JSON_STRING:
        fl_wire_pack_strn(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(j));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(j));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    default:
        msgpack_pack_nil(pk);
    }
}

json_t *tu_to_json(const msgpack_object *o)
{
    json_t *j;
    msgpack_timestamp ts;

    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return json_integer((json_int_t)o->via.bin.size);
    case MSGPACK_OBJECT_EXT:
        if (msgpack_object_to_timestamp(o, &ts))
            return json_integer(ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
        return json_null();
    case MSGPACK_OBJECT_ARRAY:
        j = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(j, tu_to_json(&o->via.array.ptr[i]));
        return j;
    case MSGPACK_OBJECT_MAP:
        j = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            char key[512];
            size_t n = k->via.str.size < sizeof key - 1 ? k->via.str.size : sizeof key - 1;
            memcpy(key, k->via.str.ptr, n);
            key[n] = '\0';
            json_object_set_new(j, key, tu_to_json(&o->via.map.ptr[i].val));
        }
        return j;
    default: return json_null();
    }
}

/* Report a broken expectation of a helper (the tests' asserts are cmocka's, not ours). */
static void tu_require(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "test helper: %s\n", what);
        abort();
    }
}

int tu_commit_group(struct fl_store *s, size_t n, const char *const tenants[],
                    const char *const texts[], int codes[], uint64_t seqs[])
{
    msgpack_sbuffer sb[8];
    msgpack_unpacked up[8];
    struct fl_event ev[8][8];
    struct fl_ack ack[8][8];
    struct fl_append app[8], *apps[8];
    struct fl_error e, form[8];

    tu_require(n <= 8, "at most 8 appends per group");
    for (size_t i = 0; i < n; i++) {
        msgpack_packer pk;
        size_t off = 0;
        json_t *j = json_loads(texts[i], JSON_ALLOW_NUL, NULL), *arr;
        tu_require(j != NULL, "bad test JSON");
        arr = json_is_array(j) ? j : json_pack("[O]", j);
        tu_require(json_array_size(arr) >= 1 && json_array_size(arr) <= 8, "1..8 events");
        msgpack_sbuffer_init(&sb[i]);
        msgpack_packer_init(&pk, &sb[i], msgpack_sbuffer_write);
        tu_pack_json(&pk, arr);
        msgpack_unpacked_init(&up[i]);
        msgpack_unpack_next(&up[i], sb[i].data, sb[i].size, &off);
        memset(&app[i], 0, sizeof app[i]);
        app[i].n = json_array_size(arr);
        for (size_t k = 0; k < app[i].n; k++) {
            if (fl_event_parse(&up[i].data.via.array.ptr[k], NULL, &ev[i][k], &e) == 0)
                continue;
            /* as the server does: the events before a malformed one are checked */
            tu_require(k > 0, "the first event of an append of the group does not parse");
            form[i] = e;
            form[i].index = (int64_t)k;
            app[i].then = &form[i];
            app[i].n = k;
        }
        if (arr != j)
            json_decref(arr);
        json_decref(j);
        app[i].tenant = tu_s(tenants[i]);
        app[i].events = ev[i];
        app[i].acks = ack[i];
        apps[i] = &app[i];
    }
    int rc = fl_store_commit(s, apps, n, &e);
    for (size_t i = 0; i < n; i++) {
        codes[i] = app[i].err.code;
        tu_require(rc == 0 || codes[i] == rc, "a failed group fails every append with its code");
        seqs[i] = app[i].err.code ? 0 : ack[i][app[i].n - 1].seq;
        for (size_t k = 0; k < app[i].n; k++)
            fl_event_free(&ev[i][k]);
        msgpack_unpacked_destroy(&up[i]);
        msgpack_sbuffer_destroy(&sb[i]);
    }
    return rc;
}

static int append(struct fl_store *s, const char *tenant, const char *json, struct fl_ack *acks,
                  size_t max, uint64_t *need, struct fl_error *err);

int tu_append(struct fl_store *s, const char *tenant, const char *json, struct fl_ack *acks,
              size_t max, struct fl_error *err)
{
    return append(s, tenant, json, acks, max, NULL, err);
}

int tu_apply(struct fl_store *s, const char *tenant, const char *json, struct fl_ack *acks,
             size_t max, uint64_t *need, struct fl_error *err)
{
    return append(s, tenant, json, acks, max, need, err);
}

static int append(struct fl_store *s, const char *tenant, const char *json, struct fl_ack *acks,
                  size_t max, uint64_t *need, struct fl_error *err)
{
    json_error_t je;
    json_t *j = json_loads(json, JSON_ALLOW_NUL, &je), *arr;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked up;
    struct fl_event *evs;
    struct fl_ack *a;
    struct fl_append app;
    struct fl_append *apps[1] = {&app};
    struct fl_error e, form;
    size_t n, off = 0, parsed = 0;
    int rc = 0;

    if (!j) {
        fprintf(stderr, "bad test JSON: %s: %s\n", je.text, json);
        abort();
    }
    arr = json_is_array(j) ? j : json_pack("[O]", j);
    n = json_array_size(arr);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    tu_pack_json(&pk, arr);
    msgpack_unpacked_init(&up);
    msgpack_unpack_next(&up, sb.data, sb.size, &off);
    evs = calloc(n ? n : 1, sizeof *evs);
    a = calloc(n ? n : 1, sizeof *a);
    fl_error_clear(&e);
    for (size_t i = 0; i < n; i++, parsed++) {
        rc = fl_event_parse(&up.data.via.array.ptr[i], NULL, &evs[i], &e);
        if (rc != 0) {
            e.index = (int64_t)i;
            break;
        }
    }
    /* as the server does: a malformed event k > 0 makes the events before it be checked */
    if (rc == 0 || parsed > 0) {
        memset(&app, 0, sizeof app);
        if (rc != 0) {
            form = e;
            app.then = &form;
        }
        app.tenant = tu_s(tenant);
        app.events = evs;
        app.n = parsed;
        app.acks = a;
        rc = need ? fl_store_apply(s, apps, 1, need, &e) : fl_store_commit(s, apps, 1, &e);
        if (rc == 0) {
            rc = app.err.code;
            e = app.err;
        }
        if (rc == 0 && acks)
            memcpy(acks, a, (n < max ? n : max) * sizeof *a);
    }
    for (size_t i = 0; i < parsed; i++)
        fl_event_free(&evs[i]);
    if (err)
        *err = e;
    free(evs);
    free(a);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    if (arr != j)
        json_decref(arr);
    json_decref(j);
    return rc;
}

int tu_appendf(struct fl_store *s, const char *tenant, struct fl_error *err, const char *fmt, ...)
{
    va_list ap;
    char *text;
    int rc;

    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        abort();
    va_end(ap);
    rc = tu_append(s, tenant, text, NULL, 0, err);
    free(text);
    return rc;
}

/* Turn packed bytes (one object) into JSON. */
static json_t *unpack_json(const msgpack_sbuffer *sb)
{
    msgpack_unpacked up;
    size_t off = 0;
    json_t *j = NULL;

    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, sb->data, sb->size, &off) == MSGPACK_UNPACK_SUCCESS)
        j = tu_to_json(&up.data);
    msgpack_unpacked_destroy(&up);
    return j;
}

#define QUERY_JSON(call)                                                                       \
    msgpack_sbuffer sb;                                                                        \
    msgpack_packer pk;                                                                         \
    json_t *j = NULL;                                                                          \
    msgpack_sbuffer_init(&sb);                                                                 \
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);                                      \
    if ((call) == 0)                                                                           \
        j = unpack_json(&sb);                                                                  \
    msgpack_sbuffer_destroy(&sb);                                                              \
    return j

json_t *tu_state(struct fl_store *s, const char *tenant, const char *flow, uint64_t as_of,
                 struct fl_error *err)
{
    QUERY_JSON(fl_query_state(s, tu_s(tenant), tu_s(flow), as_of, 0, 0, &pk, err));
}

json_t *tu_log(struct fl_store *s, const char *tenant, const struct fl_log_filter *f,
               struct fl_error *err)
{
    QUERY_JSON(fl_query_log(s, tu_s(tenant), f, &pk, NULL, err));
}

json_t *tu_history(struct fl_store *s, const char *tenant, const char *flow, uint64_t limit,
                   struct fl_error *err)
{
    QUERY_JSON(fl_query_history(s, tu_s(tenant), tu_s(flow), limit, &pk, err));
}

json_t *tu_table(struct fl_store *s, const char *tenant, const char *table, const char *col,
                 const char *val, struct fl_error *err)
{
    struct fl_str none = {NULL, 0};
    QUERY_JSON(fl_query_table(s, tu_s(tenant), tu_s(table), col ? tu_s(col) : none,
                              val ? tu_s(val) : none, none, 0, &pk, err));
}

json_t *tu_verify_as(struct fl_store *s, const char *tenant)
{
    QUERY_JSON(fl_store_verify(s, tu_s(tenant), &pk, NULL));
}

json_t *tu_verify(struct fl_store *s)
{
    return tu_verify_as(s, "");
}

void tu_verify_ok(struct fl_store *s)
{
    json_t *v = tu_verify(s);
    if (!json_is_true(json_object_get(v, "ok"))) {
        char *p = json_dumps(json_object_get(v, "problems"), 0);
        fprintf(stderr, "verify failed: %s\n", p ? p : "(no report)");
        abort();
    }
    json_decref(v);
}

char *tu_state_raw(struct fl_store *s, const char *tenant, const char *flow, uint64_t as_of,
                   size_t *len, int *rc)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct fl_error e;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    *rc = fl_query_state(s, tu_s(tenant), tu_s(flow), as_of, 0, 0, &pk, &e);
    *len = sb.size;
    return msgpack_sbuffer_release(&sb);
}

json_t *tu_get(json_t *j, const char *path)
{
    char buf[256], *save = NULL, *tok;

    snprintf(buf, sizeof buf, "%s", path);
    for (tok = strtok_r(buf, "/", &save); tok && j; tok = strtok_r(NULL, "/", &save)) {
        if (json_is_array(j))
            j = json_array_get(j, (size_t)atoi(tok));
        else
            j = json_object_get(j, tok);
    }
    return j;
}

const char *tu_str(json_t *j, const char *path)
{
    return json_string_value(tu_get(j, path));
}

long long tu_int(json_t *j, const char *path)
{
    json_t *v = tu_get(j, path);
    return json_is_integer(v) ? (long long)json_integer_value(v) : -999999;
}

static void held_hook(void *arg)
{
    struct tu_held *h = arg;

    pthread_mutex_lock(&h->mu);
    h->in_hook = 1;
    pthread_cond_broadcast(&h->cv);
    while (!h->release)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

static void *held_thread(void *arg)
{
    struct tu_held *h = arg;
    h->report = tu_verify(h->s);
    return NULL;
}

void tu_held_start(struct tu_held *h, struct fl_store *s)
{
    memset(h, 0, sizeof *h);
    h->s = s;
    if (pthread_mutex_init(&h->mu, NULL) != 0 || pthread_cond_init(&h->cv, NULL) != 0)
        abort();
    fl_store_debug_verify_hook(s, held_hook, h);
    if (pthread_create(&h->thread, NULL, held_thread, h) != 0)
        abort();
    pthread_mutex_lock(&h->mu);
    while (!h->in_hook)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

json_t *tu_held_finish(struct tu_held *h)
{
    pthread_mutex_lock(&h->mu);
    h->release = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    if (pthread_join(h->thread, NULL) != 0)
        abort();
    fl_store_debug_verify_hook(h->s, NULL, NULL);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    return h->report;
}

uint64_t tu_seed(void)
{
    const char *env = getenv("FLOWLOG_SEED");
    return env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
}

uint64_t tu_stat_u64(struct fl_store *s, const char *name)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    struct fl_error e;
    uint64_t v = UINT64_MAX;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    tu_require(fl_store_stats(s, &pk, &e) == 0, "fl_store_stats failed");
    msgpack_unpacked_init(&u);
    tu_require(msgpack_unpack_next(&u, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS &&
                   u.data.type == MSGPACK_OBJECT_MAP,
               "fl_store_stats packed no map");
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(name) &&
            memcmp(kv->key.via.str.ptr, name, strlen(name)) == 0 &&
            kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            v = kv->val.via.u64;
    }
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    if (v == UINT64_MAX) {
        fprintf(stderr, "test helper: stats has no counter %s\n", name);
        abort();
    }
    return v;
}
