/* job.h: admin work that takes long (verify: seconds per million events; backup: the copy of the
 * whole store; rebuild: the projections made again from the log) on a thread of its own, so that
 * the event loop keeps reading, committing and answering meanwhile. One job at a time; a second is
 * refused while one runs. The module knows nothing about connections: a job carries an opaque
 * owner, which the owner forgets (job_forget) if it goes away first; the result is then dropped. */
#ifndef FL_JOB_H
#define FL_JOB_H

#include <event2/event.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

enum job_kind { JOB_VERIFY, JOB_BACKUP, JOB_REBUILD };

/* Called on the loop's thread when a job is done and its owner is still there: rc and err as
 * the store gave them; body/len the packed answer (when rc == 0: verify's report, or backup's
 * {"name", "path", "bytes", "head_seq"}, or rebuild's {"events", "head_seq", "micros"}); us how
 * long it took. */
typedef void (*job_done_fn)(void *owner, uint64_t req_id, const char *what, int rc,
                            const struct fl_error *err, const char *body, size_t len, int64_t us,
                            void *arg);

struct job {
    struct fl_store *store;
    job_done_fn done;
    void *arg;
    pthread_t thread;
    int started;
    pthread_mutex_t mu; /* guards queued, finished, stop */
    pthread_cond_t cv;
    int sync_ready;     /* mu and cv exist */
    int efd;            /* the thread writes it when the job is done (eventfd) */
    struct event *done_ev;
    int busy;           /* loop side: a job is with the thread */
    int queued, finished, stop;
    /* the job: set by the loop before it is queued, read back after it finished */
    enum job_kind kind;
    char name[80], path[4096]; /* a backup's */
    char tenant[FL_TENANT_MAX + 1]; /* a verify's: "" for the whole store */
    void *owner;
    uint64_t req_id;
    int64_t t0, us;
    msgpack_sbuffer out;
    int rc;
    struct fl_error err;
    const char *gate; /* FLOWLOGD_TEST_JOB_GATE (tests only), or NULL */
};

/* Prepare j on base. Returns 0 or FL_EINTERNAL. For tests, the environment variable
 * FLOWLOGD_TEST_JOB_GATE=PATH (absolute) makes every job wait, after its work and before it
 * answers, while the file PATH exists (60 s at the most): a test can then check what is served
 * while a job runs, for as long as its commands take, and let the job go by removing the file
 * (as git's GIT_TEST_* variables do). A timed hold raced the commands on a slow machine. */
int job_init(struct job *j, struct event_base *base, struct fl_store *store, job_done_fn done,
             void *arg);
/* Wait for a running job (its result is dropped), stop the thread, free everything. */
void job_free(struct job *j);
/* Start a verify for owner's request req_id, of the whole store (tenant.len 0) or as told to
 * one tenant (fl_store_verify). Returns 0, or FL_EUNAVAILABLE while a job runs. */
int job_verify(struct job *j, void *owner, uint64_t req_id, struct fl_str tenant,
               struct fl_error *err);
/* Start a backup named name into the new directory path (fl_store_backup). As job_verify. */
int job_backup(struct job *j, void *owner, uint64_t req_id, const char *name, const char *path,
               struct fl_error *err);
/* Start a rebuild of every projection from the log (fl_store_rebuild). As job_verify. The store
 * holds appends and reads while it runs (store.h). */
int job_rebuild(struct job *j, void *owner, uint64_t req_id, struct fl_error *err);
/* owner goes away: its job, if any, finishes unanswered. */
void job_forget(struct job *j, const void *owner);

#endif
