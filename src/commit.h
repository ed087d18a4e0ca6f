/* commit.h: group commit. Appends from every connection that arrive during one pass of the event
 * loop are queued here and committed together by ONE fl_store_commit call, started from a
 * preallocated event activated with event_active at the same priority as the I/O callbacks, so
 * it starts right after the pass's read callbacks (notes/dependencies.md 4.2). The commit itself
 * runs on a thread of its own; appends that arrive while it runs make the next group.
 *
 * Only after fl_store_commit has returned (durably, unless --sync none) is each append handed to
 * the done callback to be answered: nothing is acknowledged before its commit. The module knows
 * nothing about connections: an item carries an opaque owner pointer, which the owner clears if
 * it goes away while the item is queued; the item is still committed (it was received), and its
 * answer is dropped. */
#ifndef FL_COMMIT_H
#define FL_COMMIT_H

#include <event2/event.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>

#include "store.h"

struct conn;

/* One append request waiting for its commit. Owns everything the parsed events borrow from:
 * the frame bytes (strings point into them). */
struct commit_item {
    struct fl_append app;    /* tenant, events and acks point into this item */
    struct fl_event *events; /* app.n entries, all parsed */
    struct fl_ack *acks;
    uint8_t *frame;
    char tenant[FL_TENANT_MAX + 1];
    struct conn *conn; /* owner; NULL once the connection has gone */
    uint64_t req_id;
    size_t cap; /* room for this many events */
    struct fl_error form_err;           /* app.then's, when the event after app.n's is malformed */
    TAILQ_ENTRY(commit_item) q_link;    /* in the commit queue (commit.c) */
    TAILQ_ENTRY(commit_item) conn_link; /* in the owner's pending list (conn.c) */
};

TAILQ_HEAD(commit_list, commit_item);

/* Called for each item after the commit returned, before the item is freed. */
typedef void (*commit_done_fn)(struct commit_item *it, void *arg);
/* Called once after every item of a commit was answered (subscribers continue from here). */
typedef void (*commit_after_fn)(void *arg);

struct commit_stats {
    uint64_t commits;         /* fl_store_commit calls that stored at least one event */
    uint64_t commit_failures; /* calls that failed (nothing of their group is stored) */
    uint64_t attempts;        /* every call: the two above and those with nothing to store */
    uint64_t appends_ok;
    uint64_t appends_failed;
    uint64_t events;     /* new events committed */
    uint64_t duplicates; /* events answered as duplicates */
    uint64_t commit_us;  /* total time inside fl_store_commit */
};

struct commit {
    struct fl_store *store;
    struct event *ev;        /* activated to commit at the end of this loop pass */
    struct event *gather_ev; /* timer: commit when the expected appends are in, or now */
    struct commit_list queue;
    size_t nqueued;
    struct commit_list spare; /* freed one-event items kept for reuse (commit_item_new) */
    size_t nspare;
    int armed;               /* 0 idle, 1 committing this pass, 2 gathering */
    size_t last_n;           /* appends in the last commit */
    size_t writers;          /* distinct connections that appended in the last two commits */
    const void **seen;       /* the last commit's connections (compared, never dereferenced) */
    size_t seen_last, seen_cap;
    const void **set;        /* scratch for counting them */
    size_t set_cap;
    int64_t last_us;         /* how long the last commit took */
    struct fl_append **apps; /* reused array handed to fl_store_commit */
    size_t apps_cap;
    /* The commit thread: fl_store_commit (the LMDB transaction, the journal's write and flush)
     * runs there while the loop reads, parses and answers. One commit at a time: what arrives
     * meanwhile queues for the next, which starts as soon as this one is done. The thread
     * touches only the store and apps[]; everything else stays on the loop's thread. */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;      /* guards job, finished, stop and the results below */
    pthread_cond_t cv;
    int efd;                 /* the thread writes it when a commit is done (eventfd) */
    struct event *done_ev;
    int busy;                /* loop side: a commit is with the thread or not yet answered */
    int sync_ready;          /* mu and cv exist */
    int job, finished, stop;
    struct commit_list inflight;
    size_t inflight_n;
    int inflight_rc;
    struct fl_error inflight_err;
    int64_t inflight_us;
    commit_done_fn done;
    commit_after_fn after;
    void *arg;
    struct commit_stats stats;
};

/* Allocate an item able to hold n events, zeroed; the frame is attached by the caller. NULL:
 * no memory. With q (NULL: none), a one-event item may be one q kept from commit_item_free. */
struct commit_item *commit_item_new(struct commit *q, size_t n);
/* Free an item: its parsed events (the first app.n) and frame; q may keep the item itself for
 * reuse. Accepts NULL. Loop thread only, like everything of q but the commit. */
void commit_item_free(struct commit *q, struct commit_item *it);

/* Prepare q on base. Returns 0 or FL_EINTERNAL. */
int commit_init(struct commit *q, struct event_base *base, struct fl_store *store,
                commit_done_fn done, commit_after_fn after, void *arg);
/* Free q and any items still queued (uncommitted, unanswered). */
void commit_free(struct commit *q);
/* Queue an item for the commit at the end of this loop pass; q owns it from now on. */
void commit_enqueue(struct commit *q, struct commit_item *it);
/* Commit whatever is queued right now and wait for it (shutdown); answers go through done as
 * usual. */
void commit_flush(struct commit *q);

#endif
