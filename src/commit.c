/* commit.c: one durable commit for all queued appends, on the commit thread, then their
 * answers on the loop's thread. */
#include "commit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "diag.h"
#include "util.h"

/* Items of one event, a step writer's, are kept for reuse, up to this many: a calloc and a
 * free of one cost ~650 of the loop's instructions per event (callgrind, step/64), for most
 * items of a commit are freed together, more than malloc's per-thread cache keeps. */
#define COMMIT_SPARE_MAX 256

/* One allocation for the item and its two arrays: a step-mode writer makes one item per event,
 * and three allocations each were a tenth of the loop's instructions (callgrind, step/64). */
struct commit_item *commit_item_new(struct commit *q, size_t n)
{
    size_t k = n ? n : 1;
    size_t ev_off = (sizeof(struct commit_item) + 15) & ~(size_t)15;
    size_t ack_off = ev_off + k * sizeof(struct fl_event);
    struct commit_item *it;

    if (k > (SIZE_MAX - ev_off) / (sizeof(struct fl_event) + sizeof(struct fl_ack)))
        return NULL;
    if (k == 1 && q && (it = TAILQ_FIRST(&q->spare)) != NULL) {
        TAILQ_REMOVE(&q->spare, it, q_link);
        q->nspare--;
        memset(it, 0, ack_off + sizeof(struct fl_ack)); /* as calloc'd */
    } else if (!(it = calloc(1, ack_off + k * sizeof(struct fl_ack)))) {
        return NULL;
    }
    it->cap = k;
    it->events = (struct fl_event *)((char *)it + ev_off);
    it->acks = (struct fl_ack *)((char *)it + ack_off);
    fl_error_clear(&it->app.err);
    it->app.events = it->events;
    it->app.acks = it->acks;
    it->app.tenant.p = it->tenant;
    return it;
}

void commit_item_free(struct commit *q, struct commit_item *it)
{
    if (!it)
        return;
    for (size_t i = 0; i < it->app.n; i++)
        fl_event_free(&it->events[i]);
    free(it->frame);
    if (q && it->cap == 1 && q->nspare < COMMIT_SPARE_MAX) {
        TAILQ_INSERT_HEAD(&q->spare, it, q_link);
        q->nspare++;
        return;
    }
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

/* Add p to the set of slots (a power of two) unless there; 1 if it was added. */
static int set_add(const void **set, size_t slots, const void *p)
{
    uintptr_t h = (uintptr_t)p;

    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ull;
    for (size_t i = (size_t)(h >> 40) & (slots - 1);; i = (i + 1) & (slots - 1)) {
        if (set[i] == p)
            return 0;
        if (!set[i]) {
            set[i] = p;
            return 1;
        }
    }
}

/* Count the distinct connections that appended in this commit or the one before: the writers
 * the next commit may wait for (see commit_enqueue). seen[0..seen_last) holds the previous
 * commit's connections; a small open-addressing set (set, 2 x the entries or more) counts
 * them with this commit's (a sort of the pointers cost a thousand instructions per event). */
static void commit_note_writers(struct commit *q, const struct commit_list *list)
{
    const struct commit_item *it;
    size_t n = 0, all = q->seen_last + q->last_n, slots = 64;

    while (slots < 2 * all)
        slots *= 2;
    if (all > q->seen_cap) {
        const void **p = realloc(q->seen, 2 * all * sizeof *p);
        if (!p)
            goto no_memory;
        q->seen = p;
        q->seen_cap = 2 * all;
    }
    if (slots > q->set_cap) {
        const void **p = realloc(q->set, slots * sizeof *p);
        if (!p)
            goto no_memory;
        q->set = p;
        q->set_cap = slots;
    }
    memset(q->set, 0, slots * sizeof *q->set);
    q->writers = 0;
    for (size_t i = 0; i < q->seen_last; i++)
        q->writers += set_add(q->set, slots, q->seen[i]);
    /* keep only this commit's connections for next time */
    TAILQ_FOREACH(it, list, q_link)
        if (it->conn) {
            q->writers += set_add(q->set, slots, it->conn);
            q->seen[n++] = it->conn;
        }
    q->seen_last = n;
    return;
no_memory: /* without memory, simply wait for nobody */
    q->writers = q->seen_last = 0;
}

static void commit_complete(struct commit *q, int rc, struct fl_error *err, int64_t us);

/* A lone writer's group of one commits on the loop's thread: handing it to the thread and back
 * costs two wake-ups (measured in bench/RESULTS.md: step mode with one writer lost 40%), and
 * there is nothing to overlap it with. The store's lock makes either thread safe. */
static int commit_inline(const struct commit *q, size_t n)
{
    /* Not while a verify or backup holds a snapshot: a commit that must grow the map waits for
     * it to end, and on the loop's thread that wait would stop everything. */
    return n == 1 && q->last_n <= 1 && !fl_store_pinned(q->store);
}

/* Hand the queue to the commit thread as one group (loop thread). Does nothing while a group
 * is with the thread: the queue then waits for it to finish (commit_complete starts it). */
static void commit_run(struct commit *q)
{
    struct commit_item *it;
    struct fl_error err;
    size_t n = 0;

    if (q->armed == 2)
        event_del(q->gather_ev);
    q->armed = 0;
    if (q->busy || TAILQ_EMPTY(&q->queue))
        return;
    TAILQ_CONCAT(&q->inflight, &q->queue, q_link);
    n = q->inflight_n = q->nqueued;
    q->nqueued = 0;
    q->busy = 1;
    if (commit_reserve(q, n) != 0) {
        fl_error_clear(&err);
        fl_error_set(&err, FL_EUNAVAILABLE, "server out of memory; retry the append");
        commit_complete(q, FL_EUNAVAILABLE, &err, 0);
        return;
    }
    n = 0;
    TAILQ_FOREACH(it, &q->inflight, q_link)
    q->apps[n++] = &it->app;
    if (commit_inline(q, n)) {
        int64_t t0 = fl_now_us();
        fl_error_clear(&err);
        int rc = fl_store_commit(q->store, q->apps, 1, &err);
        commit_complete(q, rc, &err, fl_now_us() - t0);
        return;
    }
    pthread_mutex_lock(&q->mu);
    q->job = 1;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* The commit thread: one fl_store_commit per group handed over, then the loop is woken. */
static void *commit_thread(void *arg)
{
    struct commit *q = arg;

    for (;;) {
        struct fl_error err;
        uint64_t one = 1;
        int64_t t0;
        int rc;

        pthread_mutex_lock(&q->mu);
        while (!q->job && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        if (!q->job) {
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        pthread_mutex_unlock(&q->mu);
        fl_error_clear(&err);
        t0 = fl_now_us();
        rc = fl_store_commit(q->store, q->apps, q->inflight_n, &err);
        pthread_mutex_lock(&q->mu);
        q->inflight_rc = rc;
        q->inflight_err = err;
        q->inflight_us = fl_now_us() - t0;
        q->job = 0;
        q->finished = 1;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        while (write(q->efd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    }
}

/* Take the finished group's results, if there are any (loop thread). */
static void commit_collect(struct commit *q, int wait)
{
    int rc;
    struct fl_error err;
    int64_t us;

    pthread_mutex_lock(&q->mu);
    while (wait && !q->finished)
        pthread_cond_wait(&q->cv, &q->mu);
    if (!q->finished) {
        pthread_mutex_unlock(&q->mu);
        return;
    }
    q->finished = 0;
    rc = q->inflight_rc;
    err = q->inflight_err;
    us = q->inflight_us;
    pthread_mutex_unlock(&q->mu);
    commit_complete(q, rc, &err, us);
}

/* libevent: the commit thread says a group is done. */
static void commit_done_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;

    (void)what;
    if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN)
        fl_errorf("commit: reading the commit thread's eventfd: %s", strerror(errno));
    commit_collect(arg, 0);
}

/* A group is done: answer each append with its own outcome. The next group starts first when
 * it goes to the thread (which then works while this one is answered), after the answers when
 * it commits inline (so that they go out in commit order). */
static void commit_complete(struct commit *q, int rc, struct fl_error *err, int64_t us)
{
    struct commit_list list = TAILQ_HEAD_INITIALIZER(list);
    struct commit_item *it;
    size_t n = q->inflight_n;
    int next_first;

    TAILQ_CONCAT(&list, &q->inflight, q_link);
    q->inflight_n = 0;
    q->busy = 0;
    q->last_us = us;
    q->stats.commit_us += (uint64_t)us;
    q->stats.attempts++;
    q->last_n = n;
    commit_note_writers(q, &list);
    next_first = !commit_inline(q, q->nqueued);
    if (next_first)
        commit_run(q);
    if (rc != 0) {
        /* The store promises every append's err is set then; make sure no append can look
         * committed whatever happened. */
        if (err->code == 0)
            fl_error_set(err, rc, "the commit failed; nothing of this append was stored");
        fl_errorf("commit of %zu appends failed: %s: %s", n, fl_err_name(err->code), err->msg);
        commit_fail_all(&list, err);
        q->stats.commit_failures++;
    }
    uint64_t events0 = q->stats.events;
    while ((it = TAILQ_FIRST(&list)) != NULL) {
        TAILQ_REMOVE(&list, it, q_link);
        commit_count(q, it);
        if (q->done)
            q->done(it, q->arg);
        commit_item_free(q, it);
    }
    /* A group whose appends were all refused or duplicates stored nothing: not a commit (so
     * events_per_commit is of the commits that wrote). */
    if (rc == 0 && q->stats.events > events0)
        q->stats.commits++;
    if (rc == 0 && q->after)
        q->after(q->arg);
    if (!next_first)
        commit_run(q);
}

/* The gather timer ran out: commit what came. */
static void gather_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    commit_run(arg);
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
    TAILQ_INIT(&q->inflight);
    TAILQ_INIT(&q->spare);
    q->store = store;
    q->done = done;
    q->after = after;
    q->arg = arg;
    q->efd = -1;
    if (pthread_mutex_init(&q->mu, NULL) != 0)
        return FL_EINTERNAL;
    if (pthread_cond_init(&q->cv, NULL) != 0) {
        pthread_mutex_destroy(&q->mu);
        return FL_EINTERNAL;
    }
    q->sync_ready = 1;
    /* Default priority, the same as every bufferevent: a lower one would starve under load. */
    q->ev = event_new(base, -1, 0, commit_cb, q);
    q->gather_ev = evtimer_new(base, gather_cb, q);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!q->ev || !q->gather_ev || q->efd < 0)
        return FL_EINTERNAL;
    q->done_ev = event_new(base, q->efd, EV_READ | EV_PERSIST, commit_done_cb, q);
    if (!q->done_ev || event_add(q->done_ev, NULL) != 0)
        return FL_EINTERNAL;
    if (commit_reserve(q, 64) != 0)
        return FL_EINTERNAL;
    if (pthread_create(&q->thread, NULL, commit_thread, q) != 0)
        return FL_EINTERNAL;
    q->thread_started = 1;
    return 0;
}

void commit_free(struct commit *q)
{
    struct commit_item *it;

    if (!q)
        return;
    if (q->thread_started) {
        /* A group with the thread is finished first (it was received: it is committed), but
         * nobody is left to answer it. */
        pthread_mutex_lock(&q->mu);
        q->stop = 1;
        pthread_cond_signal(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thread, NULL);
        q->thread_started = 0;
    }
    while ((it = TAILQ_FIRST(&q->inflight)) != NULL) {
        TAILQ_REMOVE(&q->inflight, it, q_link);
        commit_item_free(q, it);
    }
    while ((it = TAILQ_FIRST(&q->queue)) != NULL) {
        TAILQ_REMOVE(&q->queue, it, q_link);
        commit_item_free(q, it);
    }
    q->nqueued = 0;
    while ((it = TAILQ_FIRST(&q->spare)) != NULL) {
        TAILQ_REMOVE(&q->spare, it, q_link);
        free(it);
    }
    q->nspare = 0;
    if (q->ev)
        event_free(q->ev);
    q->ev = NULL;
    if (q->gather_ev)
        event_free(q->gather_ev);
    q->gather_ev = NULL;
    if (q->done_ev)
        event_free(q->done_ev);
    q->done_ev = NULL;
    if (q->efd >= 0)
        close(q->efd);
    q->efd = -1;
    if (q->sync_ready) {
        pthread_cond_destroy(&q->cv);
        pthread_mutex_destroy(&q->mu);
        q->sync_ready = 0;
    }
    free(q->apps);
    q->apps = NULL;
    free(q->seen);
    free(q->set);
    q->set = NULL;
    q->set_cap = 0;
    q->seen = NULL;
    q->apps_cap = 0;
}

/* Commit at the end of this loop pass. */
static void commit_arm_now(struct commit *q)
{
    if (q->armed == 2)
        event_del(q->gather_ev);
    q->armed = 1;
    event_active(q->ev, EV_TIMEOUT, 0);
}

/* Writers acknowledged by one commit send their next append while the next commit runs, so
 * with concurrent writers the commits alternate between two cohorts, each about half of them
 * (measured: 16 step-mode writers gave 7.9 events per commit). When the last two commits held
 * more than one append, wait a little for the other cohort instead: until as many appends as
 * the last two commits held are queued, or for at most half the last commit's duration (never
 * over 1 ms). One lone writer never waits. Every fsync then carries about twice the events. */
void commit_enqueue(struct commit *q, struct commit_item *it)
{
    size_t target = q->writers;

    TAILQ_INSERT_TAIL(&q->queue, it, q_link);
    q->nqueued++;
    if (q->armed == 1)
        return;
    if (q->armed == 2) {
        if (q->nqueued >= target)
            commit_arm_now(q);
        return;
    }
    if (q->last_n > 1 && q->nqueued < target && q->last_us > 0) {
        int64_t wait = q->last_us / 2 > 1000 ? 1000 : q->last_us / 2;
        struct timeval tv = {0, (suseconds_t)wait};
        q->armed = 2;
        if (evtimer_add(q->gather_ev, &tv) == 0)
            return;
    }
    commit_arm_now(q);
}

void commit_flush(struct commit *q)
{
    if (q->gather_ev)
        event_del(q->gather_ev);
    if (q->ev)
        event_del(q->ev); /* also takes it off the active queue */
    q->armed = 0;
    /* Each finished group starts the next from the queue (commit_complete); wait them out. */
    commit_run(q);
    while (q->busy && q->thread_started)
        commit_collect(q, 1);
}
