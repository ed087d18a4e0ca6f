/* prefault.h: a thread that readies the pages past the end of the store's data before LMDB
 * first writes them.
 *
 * LMDB (MDB_WRITEMAP) writes its pages in a shared mapping of data.mdb, and a store grows by
 * about a third of a page per event. The first write to a page of such a mapping faults; on the
 * VMs we measure on, a fault and the hypervisor's own first touch of the page cost 4-9 us, a
 * fifth of what the store spends on an event at 64 per commit (bench/RESULTS.md, set P). This
 * thread asks the kernel for those pages writable (MADV_POPULATE_WRITE) and reads one byte of
 * each, a few thousand pages ahead of LMDB's last used page, so that the writer finds them
 * ready and the cost lands on another core.
 *
 * It also readies the pages of LMDB's free list when asked (after a remap, which drops every
 * page's mapping, and after a rebuild's drop), as LMDB writes those next.
 *
 * It only ever reads the map: pages LMDB has not used yet, or free ones, or ones LMDB may be
 * writing right now (the read is done in assembly, outside the C program's memory model, and
 * its value is ignored). The map must not move under it: call fl_prefault_pause before LMDB remaps
 * (mdb_env_set_mapsize) and fl_prefault_map after. The map's size must be backed by the file
 * (store.c back_file), or a touch past the file's end would be SIGBUS. */
#ifndef FL_PREFAULT_H
#define FL_PREFAULT_H

#include <stddef.h>
#include <stdint.h>

struct fl_prefault;

/* Start the thread for pages of page_size bytes, with no map yet. 0, or an errno. */
int fl_prefault_start(struct fl_prefault **out, size_t page_size);
/* The map is now at addr, size bytes (all backed by the file); last_pgno is LMDB's last used
 * page. Call once after start, and after every remap. */
void fl_prefault_map(struct fl_prefault *p, void *addr, size_t size, uint64_t last_pgno);
/* Returns once the thread is out of the map, and keeps it out until fl_prefault_map. */
void fl_prefault_pause(struct fl_prefault *p);
/* A commit left LMDB's last used page at last_pgno. Cheap unless the pages made ready are
 * running out. */
void fl_prefault_note(struct fl_prefault *p, uint64_t last_pgno);
/* Make these pages ready too, first (LMDB's free pages, which it writes next: after a remap or
 * a rebuild's drop they have no mapping any more). Takes pgnos (malloc'd, n page numbers in
 * the order to do them) and frees it; replaces a list not yet done. Pages past the map are
 * skipped. */
void fl_prefault_list(struct fl_prefault *p, uint64_t *pgnos, size_t n);
/* Stop and join the thread; accepts NULL. */
void fl_prefault_stop(struct fl_prefault *p);
/* Pages made ready so far (stats, tests). */
uint64_t fl_prefault_pages(const struct fl_prefault *p);
/* 1 if the thread has nothing left to do (no map, or the list and the run ahead of the frontier
 * are done) and is not reading the map: fl_prefault_pages will not move until the next call
 * above. For tests, which must not take a thread that was merely descheduled for finished.
 * Accepts NULL (1). */
int fl_prefault_idle(struct fl_prefault *p);

#endif
