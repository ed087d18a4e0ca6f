/* prefault.c: the pages past the end of the store's data, made ready ahead of LMDB (prefault.h). */
#include "prefault.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL and the reads still help */
#endif

/* How far ahead of LMDB's last used page, in pages (8 MiB of 4 KiB pages): at ~90,000
 * events/s a store grows by ~30,000 pages/s, so this is ~70 ms of growth, which the thread
 * readies in ~10 ms. Not more: the pages ahead are readied again after every remap, and
 * 8,192 of them cost flowlogd up to a fifth more CPU per event in a benchmark run from an empty
 * store (bench/RESULTS.md set P). */
#define PF_AHEAD 2048
/* A commit wakes the thread once LMDB has used this many of the pages made ready. */
#define PF_NOTE_STEP (PF_AHEAD / 8)
/* Pages per turn: the thread holds the map this long at most (a remap waits for it). */
#define PF_BATCH 256

struct fl_prefault {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work, idle;
    size_t page;
    /* under mu */
    char *addr;        /* NULL: no map (paused) */
    uint64_t npages;   /* pages in the map */
    uint64_t frontier; /* LMDB's last used page, as last told */
    uint64_t done;     /* pages [frontier + 1, done) are taken (ready, or being made so) */
    uint64_t goal;     /* make pages ready up to here */
    uint64_t *list;    /* more pages to make ready first: list[at..nlist) */
    size_t nlist, at;
    int busy;          /* the thread is reading the map */
    int stop;
    /* read without mu */
    _Atomic uint64_t noted; /* frontier at the last wake-up */
    _Atomic uint64_t ready; /* pages made ready, in all */
};

/* Read one byte of the page: the hypervisor's and the kernel's tables then hold it. In
 * assembly, because LMDB may be writing that page at this moment and the value is not used. */
static void pf_touch(const char *p)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("movb (%0), %%al" : : "r"(p) : "al", "memory");
#elif defined(__aarch64__)
    __asm__ volatile("ldrb w9, [%0]" : : "r"(p) : "w9", "memory");
#else
    (void)p; /* the madvise alone, elsewhere */
#endif
}

static void pf_ready(char *base, size_t page, uint64_t from, uint64_t to)
{
    /* Errors change nothing: the pages then fault when LMDB writes them, as without this. */
    (void)madvise(base + from * page, (to - from) * page, MADV_POPULATE_WRITE);
    for (uint64_t pg = from; pg < to; pg++)
        pf_touch(base + pg * page);
}

/* Under mu: the next pages to make ready, into pg (at most PF_BATCH): the list's first, then
 * those ahead of the frontier. 0 when there is nothing to do or no map. */
static size_t pf_take(struct fl_prefault *p, uint64_t pg[PF_BATCH])
{
    size_t n = 0;

    if (!p->addr)
        return 0;
    for (; p->at < p->nlist && n < PF_BATCH; p->at++)
        if (p->list[p->at] < p->npages)
            pg[n++] = p->list[p->at];
    if (n)
        return n;
    uint64_t to = p->goal < p->npages ? p->goal : p->npages;
    for (; p->done < to && n < PF_BATCH; p->done++)
        pg[n++] = p->done;
    return n;
}

static void *pf_main(void *arg)
{
    struct fl_prefault *p = arg;
    uint64_t pg[PF_BATCH];

    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        size_t n = pf_take(p, pg);
        if (!n) {
            pthread_cond_wait(&p->work, &p->mu);
            continue;
        }
        char *base = p->addr;
        p->busy = 1;
        pthread_mutex_unlock(&p->mu);
        for (size_t i = 0, run; i < n; i += run) {
            for (run = 1; i + run < n && pg[i + run] == pg[i] + run; run++)
                ; /* neighbours in one madvise */
            pf_ready(base, p->page, pg[i], pg[i] + run);
        }
        atomic_fetch_add(&p->ready, n);
        pthread_mutex_lock(&p->mu);
        p->busy = 0;
        pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int fl_prefault_start(struct fl_prefault **out, size_t page_size)
{
    struct fl_prefault *p = calloc(1, sizeof *p);
    int rc;

    *out = NULL;
    if (!p)
        return ENOMEM;
    p->page = page_size;
    if ((rc = pthread_mutex_init(&p->mu, NULL)) != 0)
        goto fail_mu;
    if ((rc = pthread_cond_init(&p->work, NULL)) != 0)
        goto fail_work;
    if ((rc = pthread_cond_init(&p->idle, NULL)) != 0)
        goto fail_idle;
    if ((rc = pthread_create(&p->thread, NULL, pf_main, p)) != 0)
        goto fail_thread;
    *out = p;
    return 0;
fail_thread:
    pthread_cond_destroy(&p->idle);
fail_idle:
    pthread_cond_destroy(&p->work);
fail_work:
    pthread_mutex_destroy(&p->mu);
fail_mu:
    free(p);
    return rc;
}

/* Under mu: LMDB's last used page is last_pgno; make the pages after it ready. */
static void pf_advance(struct fl_prefault *p, uint64_t last_pgno)
{
    if (last_pgno > p->frontier)
        p->frontier = last_pgno;
    if (p->done < p->frontier + 1)
        p->done = p->frontier + 1;
    p->goal = p->frontier + 1 + PF_AHEAD;
    atomic_store(&p->noted, p->frontier);
    pthread_cond_signal(&p->work);
}

void fl_prefault_map(struct fl_prefault *p, void *addr, size_t size, uint64_t last_pgno)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->addr = addr;
    p->npages = size / p->page;
    p->done = 0; /* a new map: nothing in it is ready any more */
    pf_advance(p, last_pgno);
    pthread_mutex_unlock(&p->mu);
}

void fl_prefault_pause(struct fl_prefault *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->addr = NULL;
    while (p->busy)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void fl_prefault_note(struct fl_prefault *p, uint64_t last_pgno)
{
    if (!p || last_pgno < atomic_load_explicit(&p->noted, memory_order_relaxed) + PF_NOTE_STEP)
        return;
    pthread_mutex_lock(&p->mu);
    pf_advance(p, last_pgno);
    pthread_mutex_unlock(&p->mu);
}

void fl_prefault_list(struct fl_prefault *p, uint64_t *pgnos, size_t n)
{
    if (!p) {
        free(pgnos);
        return;
    }
    pthread_mutex_lock(&p->mu);
    free(p->list);
    p->list = pgnos;
    p->nlist = n;
    p->at = 0;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
}

void fl_prefault_stop(struct fl_prefault *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    p->addr = NULL;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p->list);
    free(p);
}

uint64_t fl_prefault_pages(const struct fl_prefault *p)
{
    return p ? atomic_load(&p->ready) : 0;
}

int fl_prefault_idle(struct fl_prefault *p)
{
    int idle;

    if (!p)
        return 1;
    pthread_mutex_lock(&p->mu);
    /* what pf_take would hand out, without taking it (list pages past the map count as work
     * until the thread has skipped them: it is signalled and will) */
    idle =
        !p->busy &&
        (!p->addr || (p->at >= p->nlist && p->done >= (p->goal < p->npages ? p->goal : p->npages)));
    pthread_mutex_unlock(&p->mu);
    return idle;
}
