/* job.c: long admin work (verify, backup, rebuild) on a thread beside the event loop (see job.h).
 */
#include "job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "diag.h"
#include "util.h"
#include "wire.h"

static const char *const job_names[] = {"verify", "backup", "rebuild"};

static int job_run_backup(struct job *j, msgpack_packer *pk)
{
    uint64_t bytes = 0, head = 0;
    int rc = fl_store_backup(j->store, j->path, &bytes, &head, &j->err);

    if (rc != 0)
        return rc;
    fl_info("backup of seq 1..%llu written to %s (%llu bytes)", (unsigned long long)head, j->path,
            (unsigned long long)bytes);
    msgpack_pack_map(pk, 4);
    fl_wire_pack_cstr(pk, "name");
    fl_wire_pack_cstr(pk, j->name);
    fl_wire_pack_cstr(pk, "path");
    fl_wire_pack_cstr(pk, j->path);
    fl_wire_pack_cstr(pk, "bytes");
    msgpack_pack_uint64(pk, bytes);
    fl_wire_pack_cstr(pk, "head_seq");
    msgpack_pack_uint64(pk, head);
    return 0;
}

static int job_run_rebuild(struct job *j, msgpack_packer *pk)
{
    uint64_t events = 0;
    int64_t t0 = fl_now_us();
    int rc = fl_store_rebuild(j->store, &events, &j->err);

    if (rc != 0)
        return rc;
    int64_t us = fl_now_us() - t0;
    fl_info("rebuild: %llu events in %.3f s", (unsigned long long)events, (double)us / 1e6);
    msgpack_pack_map(pk, 3);
    fl_wire_pack_cstr(pk, "events");
    msgpack_pack_uint64(pk, events);
    /* the last seq it covered: it replays the whole log, which has no gaps (commits that waited
     * for it have moved the store's head on by now) */
    fl_wire_pack_cstr(pk, "head_seq");
    msgpack_pack_uint64(pk, events);
    fl_wire_pack_cstr(pk, "micros");
    msgpack_pack_uint64(pk, (uint64_t)(us > 0 ? us : 0));
    return 0;
}

#define JOB_GATE_POLL_MS 10
#define JOB_GATE_MAX_MS 60000

/* Wait while the test gate (FLOWLOGD_TEST_JOB_GATE) exists, JOB_GATE_MAX_MS at the most. */
static void job_hold(const char *gate)
{
    struct timespec ts = {0, JOB_GATE_POLL_MS * 1000000L};

    for (int waited = 0; waited < JOB_GATE_MAX_MS && access(gate, F_OK) == 0;
         waited += JOB_GATE_POLL_MS)
        nanosleep(&ts, NULL);
}

static void *job_thread(void *arg)
{
    struct job *j = arg;
    uint64_t one = 1;

    for (;;) {
        msgpack_packer pk;

        pthread_mutex_lock(&j->mu);
        while (!j->queued && !j->stop)
            pthread_cond_wait(&j->cv, &j->mu);
        if (!j->queued) {
            pthread_mutex_unlock(&j->mu);
            return NULL;
        }
        pthread_mutex_unlock(&j->mu);
        msgpack_packer_init(&pk, &j->out, msgpack_sbuffer_write);
        fl_error_clear(&j->err);
        if (j->kind == JOB_BACKUP)
            j->rc = job_run_backup(j, &pk);
        else if (j->kind == JOB_REBUILD)
            j->rc = job_run_rebuild(j, &pk);
        else
            j->rc = fl_store_verify(j->store, (struct fl_str){j->tenant, strlen(j->tenant)}, &pk,
                                    &j->err);
        if (j->gate)
            job_hold(j->gate);
        j->us = fl_now_us() - j->t0;
        pthread_mutex_lock(&j->mu);
        j->queued = 0;
        j->finished = 1;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        while (write(j->efd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    }
}

/* Take a finished job's result to its owner (loop thread). */
static void job_collect(struct job *j)
{
    int finished;

    pthread_mutex_lock(&j->mu);
    finished = j->finished;
    j->finished = 0;
    pthread_mutex_unlock(&j->mu);
    if (!finished)
        return;
    j->busy = 0;
    if (j->owner && j->done)
        j->done(j->owner, j->req_id, job_names[j->kind], j->rc, &j->err, j->out.data,
                j->out.size, j->us, j->arg);
    j->owner = NULL;
    msgpack_sbuffer_clear(&j->out);
}

static void job_done_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;

    (void)what;
    if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN)
        fl_errorf("job: reading the job thread's eventfd: %s", strerror(errno));
    job_collect(arg);
}

/* The test gate's path (job.h), or NULL; -1 when it is set but not an absolute path. */
static int job_gate(const char **gate)
{
    const char *v = getenv("FLOWLOGD_TEST_JOB_GATE");

    *gate = NULL;
    if (!v || !*v)
        return 0;
    if (v[0] != '/') {
        fl_errorf("FLOWLOGD_TEST_JOB_GATE=%s: expected an absolute path", v);
        return -1;
    }
    fl_warn("FLOWLOGD_TEST_JOB_GATE: every verify and backup waits, after its work, while %s "
            "exists (for tests)", v);
    *gate = v;
    return 0;
}

int job_init(struct job *j, struct event_base *base, struct fl_store *store, job_done_fn done,
             void *arg)
{
    memset(j, 0, sizeof *j);
    j->store = store;
    j->done = done;
    j->arg = arg;
    j->efd = -1;
    msgpack_sbuffer_init(&j->out);
    if (pthread_mutex_init(&j->mu, NULL) != 0)
        return FL_EINTERNAL;
    if (pthread_cond_init(&j->cv, NULL) != 0) {
        pthread_mutex_destroy(&j->mu);
        return FL_EINTERNAL;
    }
    j->sync_ready = 1;
    if (job_gate(&j->gate) != 0)
        return FL_EINTERNAL;
    j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (j->efd < 0)
        return FL_EINTERNAL;
    j->done_ev = event_new(base, j->efd, EV_READ | EV_PERSIST, job_done_cb, j);
    if (!j->done_ev || event_add(j->done_ev, NULL) != 0)
        return FL_EINTERNAL;
    if (pthread_create(&j->thread, NULL, job_thread, j) != 0)
        return FL_EINTERNAL;
    j->started = 1;
    return 0;
}

void job_free(struct job *j)
{
    if (!j)
        return;
    if (j->started) {
        pthread_mutex_lock(&j->mu);
        if (j->queued)
            fl_info("waiting for a running %s to finish before stopping", job_names[j->kind]);
        j->stop = 1;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thread, NULL); /* a queued job runs first: the thread takes it */
        j->started = 0;
    }
    if (j->done_ev)
        event_free(j->done_ev);
    j->done_ev = NULL;
    if (j->efd >= 0)
        close(j->efd);
    j->efd = -1;
    if (j->sync_ready) {
        pthread_cond_destroy(&j->cv);
        pthread_mutex_destroy(&j->mu);
        j->sync_ready = 0;
    }
    msgpack_sbuffer_destroy(&j->out);
}

static int job_start(struct job *j, enum job_kind kind, void *owner, uint64_t req_id,
                     struct fl_error *err)
{
    if (j->busy)
        return fl_error_set(err, FL_EUNAVAILABLE,
                            "a %s is already running (for %.1f s); retry when it has answered",
                            job_names[j->kind], (double)(fl_now_us() - j->t0) / 1e6);
    j->kind = kind;
    j->busy = 1;
    j->owner = owner;
    j->req_id = req_id;
    j->t0 = fl_now_us();
    pthread_mutex_lock(&j->mu);
    j->queued = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

int job_verify(struct job *j, void *owner, uint64_t req_id, struct fl_str tenant,
               struct fl_error *err)
{
    /* the tenant belongs to a running verify until it is done: set only when none runs */
    if (!j->busy) {
        if (tenant.len >= sizeof j->tenant)
            return fl_error_set(err, FL_EBAD_REQUEST, "the tenant is too long");
        memcpy(j->tenant, tenant.p, tenant.len);
        j->tenant[tenant.len] = '\0';
    }
    return job_start(j, JOB_VERIFY, owner, req_id, err);
}

int job_backup(struct job *j, void *owner, uint64_t req_id, const char *name, const char *path,
               struct fl_error *err)
{
    /* name and path belong to a running backup until it is done: set only when none runs */
    if (!j->busy && ((size_t)snprintf(j->name, sizeof j->name, "%s", name) >= sizeof j->name ||
                     (size_t)snprintf(j->path, sizeof j->path, "%s", path) >= sizeof j->path))
        return fl_error_set(err, FL_EBAD_REQUEST, "the backup path is too long");
    return job_start(j, JOB_BACKUP, owner, req_id, err);
}

int job_rebuild(struct job *j, void *owner, uint64_t req_id, struct fl_error *err)
{
    return job_start(j, JOB_REBUILD, owner, req_id, err);
}

void job_forget(struct job *j, const void *owner)
{
    if (j->busy && j->owner == owner)
        j->owner = NULL;
}
