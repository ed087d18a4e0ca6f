/* sub.h: one subscription: a filter and the next seq to deliver. Pushes are produced from the
 * log itself (fl_query_log from `next`), never from a per-subscriber queue, so a subscriber that
 * falls behind costs no memory and never slows writers: it simply reads further back in the log
 * when it is ready again. Each push is one fl_query_log call, which opens and closes its own
 * LMDB snapshot, so no read transaction outlives a loop pass.
 *
 * The module knows nothing about connections: it packs push frames into an evbuffer (the
 * connection's output) and stops when that buffer holds `limit` bytes. */
#ifndef FL_SUB_H
#define FL_SUB_H

#include <event2/buffer.h>
#include <msgpack.h>
#include <stdint.h>
#include <sys/queue.h>

#include "query.h"

struct sub {
    uint64_t id;            /* the subscribe request's id; pushes carry it */
    uint64_t next;          /* next seq to consider */
    struct fl_log_filter f; /* flow_id/run_id point at the owned copies below */
    char *flow_id, *run_id;
    uint64_t pushed;       /* events delivered so far */
    TAILQ_ENTRY(sub) link; /* in the connection's list */
};

TAILQ_HEAD(sub_list, sub);

enum sub_pump_result { SUB_CAUGHT_UP = 0, SUB_BLOCKED = 1 };

/* A subscription with id, copying f's strings; f->limit is ignored. NULL: out of memory. */
struct sub *sub_new(uint64_t id, const struct fl_log_filter *f);
/* Accepts NULL. */
void sub_free(struct sub *s);

/* Push frames {"id", "push": "events", "result": {...}} to out until the subscription has
 * seen the log's head (SUB_CAUGHT_UP) or out holds at least limit bytes (SUB_BLOCKED: call again
 * once it drains). Ranges without matching events advance `next` without a push. Each push
 * carries at most max_bytes of events and is at most max_frame bytes. sb is scratch space
 * (left empty). Returns SUB_CAUGHT_UP, SUB_BLOCKED or a negative fl_err with err set; after an
 * error the subscription cannot continue. */
int sub_pump(struct sub *s, struct fl_store *st, struct fl_str tenant, msgpack_sbuffer *sb,
             struct evbuffer *out, size_t limit, size_t max_bytes, size_t max_frame,
             struct fl_error *err);

#endif
