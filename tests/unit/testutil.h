/* testutil.h: helpers for the store tests: temp directories, events written as JSON, reads
 * turned back into JSON for assertions. */
#ifndef FL_TESTUTIL_H
#define FL_TESTUTIL_H

#include <jansson.h>
#include <pthread.h>
#include <msgpack.h>
#include <stdint.h>

#include "err.h"
#include "event.h"
#include "query.h"
#include "store.h"

/* A fresh directory under $TMPDIR (or /tmp); caller frees the string after tu_rmdir. */
char *tu_tmpdir(void);
/* Remove a directory tree. */
void tu_rmdir(const char *dir);
/* Open a store in dir with nosync (fast tests) unless durable. Asserts success. */
struct fl_store *tu_open(const char *dir, int durable);

/* A cmocka fixture: a fresh store (nosync) in a fresh directory, as *state. */
struct tu_fx {
    char *dir;
    struct fl_store *s;
};
int tu_fx_setup(void **state);
int tu_fx_teardown(void **state);

/* Pack a jansson value as msgpack (ints stay ints) into sb. */
void tu_pack_json(msgpack_packer *pk, const json_t *j);
/* Convert a msgpack object to jansson (timestamps become integers of microseconds). */
json_t *tu_to_json(const msgpack_object *o);

/* Append the events given as a JSON array text (or one object) as ONE atomic append of tenant.
 * Returns the append's error code (0 on success); acks (may be NULL) receive up to max acks;
 * err (may be NULL) the error. */
int tu_append(struct fl_store *s, const char *tenant, const char *json, struct fl_ack *acks,
              size_t max, struct fl_error *err);
/* As tu_append, with fl_store_apply instead of fl_store_commit: applied, not yet durable;
 * *need gets the durable head it waits for (fl_store_sync). */
int tu_apply(struct fl_store *s, const char *tenant, const char *json, struct fl_ack *acks,
             size_t max, uint64_t *need, struct fl_error *err);
/* As tu_append, for a printf format. */
int tu_appendf(struct fl_store *s, const char *tenant, struct fl_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* One fl_store_commit of n (at most 8) appends, each a JSON array of up to 8 events (or one
 * event) of its tenant; each append's error code goes to codes[i] and its last ack's seq to
 * seqs[i] (0 if it failed). A group that fails as a whole must fail every append with its
 * code. An append whose event k > 0 is malformed is checked up to it, as flowlogd does
 * (fl_append.then). Returns fl_store_commit's result. Aborts on bad test input. */
int tu_commit_group(struct fl_store *s, size_t n, const char *const tenants[],
                    const char *const texts[], int codes[], uint64_t seqs[]);

/* The state of a flow as JSON (NULL on error, err filled); caller json_decref's. */
json_t *tu_state(struct fl_store *s, const char *tenant, const char *flow, uint64_t as_of,
                 struct fl_error *err);
/* The raw msgpack bytes of a state read (for exact comparisons); caller frees. */
char *tu_state_raw(struct fl_store *s, const char *tenant, const char *flow, uint64_t as_of,
                   size_t *len, int *rc);
/* Run a query function given as a closure over a packer, returning JSON of the result. */
json_t *tu_log(struct fl_store *s, const char *tenant, const struct fl_log_filter *f,
               struct fl_error *err);
json_t *tu_history(struct fl_store *s, const char *tenant, const char *flow, uint64_t limit,
                   struct fl_error *err);
json_t *tu_table(struct fl_store *s, const char *tenant, const char *table, const char *col,
                 const char *val, struct fl_error *err);
json_t *tu_verify(struct fl_store *s);
/* The report as told to tenant ("" for the whole store's). */
json_t *tu_verify_as(struct fl_store *s, const char *tenant);
/* Run verify and abort, printing its problems, unless it passes. */
void tu_verify_ok(struct fl_store *s);
/* One counter of fl_store_stats (fails the test when there is no such counter). */
uint64_t tu_stat_u64(struct fl_store *s, const char *name);

/* A verify on a thread of its own, held right after it took its snapshot (through
 * fl_store_debug_verify_hook): tu_held_start returns once it holds; tu_held_finish lets it go,
 * joins it and returns its report (the caller json_decref's it). */
struct tu_held {
    struct fl_store *s;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_hook, release;
    json_t *report;
};
void tu_held_start(struct tu_held *h, struct fl_store *s);
json_t *tu_held_finish(struct tu_held *h);

/* The string at a JSON path like "migration_flows/0/migration_status" (NULL if absent). */
const char *tu_str(json_t *j, const char *path);
/* The integer at a path (or -999999 if absent or not an integer). */
long long tu_int(json_t *j, const char *path);
/* The value at a path. */
json_t *tu_get(json_t *j, const char *path);

static inline struct fl_str tu_s(const char *s)
{
    struct fl_str r = {s, s ? strlen(s) : 0};
    return r;
}

/* A seed for a randomized test: FLOWLOG_SEED when set (to replay a failure), else the clock. */
uint64_t tu_seed(void);

#endif
