/* test_commit.c: group commit (src/commit.c) with a verify holding a snapshot. A commit that
 * must grow the LMDB map waits for the verify to end; a lone writer's append, which normally
 * commits on the loop's thread, must then go to the commit thread, or the whole event loop would
 * stop until the verify ends. Here the loop's thread is the test's: were the append committed
 * inline, the loop pass below would never return (alarm turns that into a failure). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "commit.h"
#include "store_int.h"
#include "testutil.h"

#define T "acme:eng-2026"

struct outcomes {
    int answered, failed;
};

static void answered(struct commit_item *it, void *arg)
{
    struct outcomes *h = arg;
    h->answered++;
    h->failed += it->app.err.code != 0;
}

/* One append of n flow registrations with 400-byte names, as the server would queue it. */
static struct commit_item *big_append(int from, int n)
{
    struct commit_item *it = commit_item_new(NULL, (size_t)n);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked up;
    json_t *arr = json_array();
    struct fl_error e;
    size_t off = 0;
    char name[401];

    assert_non_null(it);
    memset(name, 'n', 400);
    name[400] = '\0';
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "grow-%d", from + i);
        json_array_append_new(arr, json_pack("{s:s, s:{s:s, s:s}}", "type", "flow_registered",
                                             "data", "flow_id", id, "flow_name", name));
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    tu_pack_json(&pk, arr);
    json_decref(arr);
    size_t len = sb.size;
    it->frame = (uint8_t *)msgpack_sbuffer_release(&sb);
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, (const char *)it->frame, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    for (int i = 0; i < n; i++) {
        fl_error_clear(&e);
        if (fl_event_parse(&up.data.via.array.ptr[i], NULL, &it->events[i], &e) != 0)
            fail_msg("parse: %s", e.msg);
        it->app.n++;
    }
    msgpack_unpacked_destroy(&up); /* as the server does: the events borrow from the frame only */
    snprintf(it->tenant, sizeof it->tenant, "%s", T);
    it->app.tenant.len = strlen(T);
    return it;
}

static void test_lone_append_during_verify(void **state)
{
    char *dir = tu_tmpdir();
    /* 1 MiB: the first append fits, the second (~1.5 MB) must grow the map. A map that grows
     * during the first (a smaller one: growths add at least 64 MiB) would leave the second
     * nothing to wait for. */
    struct fl_store_opts o = {.dir = dir, .nosync = 1, .map_size = 1024 * 1024};
    struct outcomes h = {0};
    struct event_base *base = event_base_new();
    struct fl_store *s;
    struct commit q;
    struct tu_held held;
    struct fl_error e;

    (void)state;
    alarm(30);
    assert_non_null(base);
    assert_int_equal(fl_store_open(&s, &o, &e), 0);
    assert_int_equal(commit_init(&q, base, s, answered, NULL, &h), 0);
    commit_enqueue(&q, big_append(0, 10)); /* a lone writer before the verify: committed */
    while (h.answered < 1)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(h.failed, 0);
    uint64_t head0 = fl_store_head(s);

    tu_held_start(&held, s);
    assert_true(fl_store_pinned(s));
    /* 1,000 rows of 400-byte names outgrow the map: this commit waits for the verify. */
    commit_enqueue(&q, big_append(10, 1000));
    for (int i = 0; i < 5; i++)
        event_base_loop(base, EVLOOP_NONBLOCK); /* returns: the loop is not stopped */
    assert_int_equal(h.answered, 1);          /* still waiting for the map */

    json_t *report = tu_held_finish(&held);
    while (h.answered < 2)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(h.failed, 0);
    assert_int_equal(fl_store_head(s), head0 + 1000);
    assert_true(s->map_growths >= 1); /* it did wait for a growth */
    assert_true(json_is_true(json_object_get(report, "ok")));
    assert_int_equal(tu_int(report, "head_seq"), head0);
    json_decref(report);
    tu_verify_ok(s);
    alarm(0);
    commit_free(&q);
    event_base_free(base);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lone_append_during_verify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
