/* job.c: long admin work (verify) on a thread beside the event loop (see job.h). */
#include "job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "diag.h"
#include "util.h"

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
        j->rc = fl_store_verify(j->store, &pk, &j->err);
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
        j->done(j->owner, j->req_id, j->rc, &j->err, j->out.data, j->out.size, j->us, j->arg);
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
            fl_info("waiting for a running verify to finish before stopping");
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

int job_verify(struct job *j, void *owner, uint64_t req_id, struct fl_error *err)
{
    if (j->busy)
        return fl_error_set(err, FL_EUNAVAILABLE,
                            "a verify is already running (for %.1f s); retry when it has "
                            "answered",
                            (double)(fl_now_us() - j->t0) / 1e6);
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

void job_forget(struct job *j, const void *owner)
{
    if (j->busy && j->owner == owner)
        j->owner = NULL;
}
