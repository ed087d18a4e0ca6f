/* commit.c: one durable commit per loop pass for all queued appends, then their answers. */
#include "commit.h"

#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "util.h"

struct commit_item *commit_item_new(size_t n)
{
    struct commit_item *it = calloc(1, sizeof *it);

    if (!it)
        return NULL;
    it->events = calloc(n ? n : 1, sizeof *it->events);
    it->acks = calloc(n ? n : 1, sizeof *it->acks);
    if (!it->events || !it->acks) {
        free(it->events);
        free(it->acks);
        free(it);
        return NULL;
    }
    fl_error_clear(&it->app.err);
    it->app.events = it->events;
    it->app.acks = it->acks;
    it->app.tenant.p = it->tenant;
    return it;
}

void commit_item_free(struct commit_item *it)
{
    if (!it)
        return;
    for (size_t i = 0; i < it->app.n; i++)
        fl_event_free(&it->events[i]);
    free(it->events);
    free(it->acks);
    msgpack_unpacked_destroy(&it->msg);
    free(it->frame);
    free(it);
}

/* Make room for n pointers in the array handed to the store. */
static int commit_reserve(struct commit *q, size_t n)
{
    struct fl_append **p;
    size_t cap = q->apps_cap ? q->apps_cap : 64;

    if (n <= q->apps_cap)
        return 0;
    while (cap < n)
        cap *= 2;
    p = realloc(q->apps, cap * sizeof *p);
    if (!p)
        return FL_EINTERNAL;
    q->apps = p;
    q->apps_cap = cap;
    return 0;
}

/* Record an outcome in the counters. */
static void commit_count(struct commit *q, const struct commit_item *it)
{
    if (it->app.err.code != 0) {
        q->stats.appends_failed++;
        return;
    }
    q->stats.appends_ok++;
    for (size_t i = 0; i < it->app.n; i++) {
        if (it->acks[i].duplicate)
            q->stats.duplicates++;
        else
            q->stats.events++;
    }
}

/* Give every append in list the same failure, for when the store was never reached. */
static void commit_fail_all(struct commit_list *list, const struct fl_error *err)
{
    struct commit_item *it;

    TAILQ_FOREACH(it, list, q_link)
    if (it->app.err.code == 0) {
        it->app.err = *err;
        it->app.err.index = -1;
    }
}

/* Commit the queue as one transaction, then answer each append with its own outcome.
 * The queue is detached first, so the answers go out for exactly the appends in this commit. */
static void commit_run(struct commit *q)
{
    struct commit_list list = TAILQ_HEAD_INITIALIZER(list);
    struct commit_item *it;
    struct fl_error err;
    size_t n = 0;
    int64_t t0;
    int rc;

    q->armed = 0;
    if (TAILQ_EMPTY(&q->queue))
        return;
    TAILQ_CONCAT(&list, &q->queue, q_link);
    n = q->nqueued;
    q->nqueued = 0;
    fl_error_clear(&err);
    if ((rc = commit_reserve(q, n)) != 0) {
        fl_error_set(&err, FL_EUNAVAILABLE, "server out of memory; retry the append");
    } else {
        size_t i = 0;
        TAILQ_FOREACH(it, &list, q_link)
        q->apps[i++] = &it->app;
        t0 = fl_now_us();
        rc = fl_store_commit(q->store, q->apps, n, &err);
        q->stats.commit_us += (uint64_t)(fl_now_us() - t0);
    }
    if (rc != 0) {
        /* The store promises every append's err is set then; make sure no append can look
         * committed whatever happened. */
        if (err.code == 0)
            fl_error_set(&err, rc, "the commit failed; nothing of this append was stored");
        fl_errorf("commit of %zu appends failed: %s: %s", n, fl_err_name(err.code), err.msg);
        commit_fail_all(&list, &err);
        q->stats.commit_failures++;
    } else {
        q->stats.commits++;
    }
    while ((it = TAILQ_FIRST(&list)) != NULL) {
        TAILQ_REMOVE(&list, it, q_link);
        commit_count(q, it);
        if (q->done)
            q->done(it, q->arg);
        commit_item_free(it);
    }
    if (rc == 0 && q->after)
        q->after(q->arg);
}

/* The event callback: runs once per loop pass after that pass's read callbacks. */
static void commit_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    commit_run(arg);
}

int commit_init(struct commit *q, struct event_base *base, struct fl_store *store,
                commit_done_fn done, commit_after_fn after, void *arg)
{
    memset(q, 0, sizeof *q);
    TAILQ_INIT(&q->queue);
    q->store = store;
    q->done = done;
    q->after = after;
    q->arg = arg;
    /* Default priority, the same as every bufferevent: a lower one would starve under load. */
    q->ev = event_new(base, -1, 0, commit_cb, q);
    if (!q->ev)
        return FL_EINTERNAL;
    return commit_reserve(q, 64);
}

void commit_free(struct commit *q)
{
    struct commit_item *it;

    if (!q)
        return;
    while ((it = TAILQ_FIRST(&q->queue)) != NULL) {
        TAILQ_REMOVE(&q->queue, it, q_link);
        commit_item_free(it);
    }
    q->nqueued = 0;
    if (q->ev)
        event_free(q->ev);
    q->ev = NULL;
    free(q->apps);
    q->apps = NULL;
    q->apps_cap = 0;
}

void commit_enqueue(struct commit *q, struct commit_item *it)
{
    TAILQ_INSERT_TAIL(&q->queue, it, q_link);
    q->nqueued++;
    if (!q->armed) {
        q->armed = 1;
        event_active(q->ev, EV_TIMEOUT, 0);
    }
}

void commit_flush(struct commit *q)
{
    if (q->ev)
        event_del(q->ev); /* also takes it off the active queue */
    commit_run(q);
}
