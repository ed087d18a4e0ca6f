/* journal.h: the log's durable copy, a flat file DIR/journal that every commit appends to and
 * flushes before anything is acknowledged. No LMDB and no networking here.
 *
 * Why it exists: a durable LMDB commit flushes every B-tree page it dirtied, and the projections
 * dirty 3-4 scattered pages per event (13 KB written per event at 64 events per commit; see
 * bench/RESULTS.md). The journal makes a commit durable with one sequential write of the
 * records themselves (~0.6 KB per event, O_DIRECT | O_DSYNC: durable when it returns, or a
 * write and an fdatasync where O_DIRECT is refused); the LMDB environment (log and
 * projections, still in one transaction) is then committed without a flush, and the store
 * recovers it from the journal after an unclean stop (store.c).
 *
 * Layout (all integers big-endian):
 *
 *   header  = "flowlog-journal" 0x0A (16 bytes), version u32 = 1, zeros to offset 4096
 *   frame   = len u32 (1 .. FL_JOURNAL_MAX_RECORD) || record (record.h: it carries its own
 *             seq, checksum and chain hash)
 *   frames follow the header back to back, in seq order; the file beyond the last frame is zeros
 *   (it is extended in zeroed chunks ahead of the writes, so that a flush overwrites allocated
 *   blocks and does not also commit a size change), so a zero length marks the end.
 *
 * A flush that was cut short (a crash in the middle of one) leaves a damaged frame at the end;
 * nothing of that flush was acknowledged. fl_journal_cut saves such a tail to
 * DIR/journal.cut-OFFSET before zeroing it, so nothing is destroyed unseen. */
#ifndef FL_JOURNAL_H
#define FL_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "util.h"

#define FL_JOURNAL_HEADER 4096
#define FL_JOURNAL_MAX_RECORD (64u << 20)

struct fl_journal;

/* Open DIR/journal, creating it (with its header, flushed) if missing; *created (may be NULL)
 * says which. Fails with a message if the file is not a journal of this version. */
int fl_journal_open(struct fl_journal **out, const char *dir, int nosync, int *created,
                    struct fl_error *err);
/* Close; accepts NULL. Staged frames are dropped. */
void fl_journal_close(struct fl_journal *j);

/* Called for each intact frame by fl_journal_scan: off is the frame's offset, rec/len the
 * record (valid during the call only). Return 0 to go on, anything else to stop the scan with
 * that value. */
typedef int (*fl_journal_fn)(void *arg, uint64_t off, const uint8_t *rec, size_t len);

/* Read the frames from offset from (0: the first) to the end. *end gets the offset after the
 * last frame read whole; *damaged gets 1 if the scan stopped at a frame that cannot be a
 * frame (a length past the file or the limit, or fewer bytes than it declares), else 0. The
 * frame's record is not checked here: fn does that. Returns 0, fn's nonzero value, or a
 * negative fl_err (read error). */
int fl_journal_scan(struct fl_journal *j, uint64_t from, fl_journal_fn fn, void *arg,
                    uint64_t *end, int *damaged, struct fl_error *err);

/* Read the record of the frame at off into out (replacing its contents). FL_ENOT_FOUND if
 * there is no whole frame there. */
int fl_journal_read(struct fl_journal *j, uint64_t off, struct fl_buf *out, struct fl_error *err);

/* Make off the journal's end: save whatever nonzero bytes lie beyond it to DIR/journal.cut-OFF
 * (reported in *saved, 0 if there were none), zero them, flush. For a torn tail found by a
 * scan, and at open once the end is known. */
int fl_journal_cut(struct fl_journal *j, uint64_t off, uint64_t *saved, struct fl_error *err);

/* Stage one record for the next flush. Returns 0 or FL_EINTERNAL (out of memory, or a record
 * over FL_JOURNAL_MAX_RECORD). */
int fl_journal_stage(struct fl_journal *j, const void *rec, size_t len, struct fl_error *err);
/* The staged byte count, and dropping staged frames back to such a count (a failed append). */
size_t fl_journal_staged(const struct fl_journal *j);
void fl_journal_unstage(struct fl_journal *j, size_t mark);

/* Write the staged frames at the end and make them durable (unless nosync): in whole blocks
 * through O_DIRECT | O_DSYNC, or a write and an fdatasync where O_DIRECT is refused. On
 * success the end moves past them and nothing stays staged. On failure the end does not move
 * (the next flush overwrites the same place) and the staged frames are dropped; the error
 * says whether the disk is full. */
int fl_journal_flush(struct fl_journal *j, struct fl_error *err);
/* Write the staged frames at the end through the page cache, not yet durable: a process crash
 * keeps them, an OS crash may not, until fl_journal_sync. On success the end moves past them;
 * on failure as fl_journal_flush. For a pipelined commit (store.h), whose flush runs on another
 * thread while the next group is applied. */
int fl_journal_write(struct fl_journal *j, struct fl_error *err);
/* Flush what the file holds (fdatasync, unless nosync); counted in fl_journal_flushes. Safe on
 * one thread while another stages and writes (the descriptor is shared, nothing else). */
int fl_journal_sync(struct fl_journal *j, struct fl_error *err);
/* Take back the last flush (its LMDB commit failed): zero [to, end), flush, end = to. */
int fl_journal_undo(struct fl_journal *j, uint64_t to, struct fl_error *err);

/* The offset after the last flushed frame; where the next flush writes. */
uint64_t fl_journal_end(const struct fl_journal *j);
/* Counters for stats. */
uint64_t fl_journal_flushes(const struct fl_journal *j);
uint64_t fl_journal_bytes(const struct fl_journal *j);

/* Copy the file's first end bytes (whole frames: an end recorded by a commit) to the new file
 * path (flushed); for backups. Safe while frames are written beyond end. */
int fl_journal_copy(struct fl_journal *j, const char *path, uint64_t end, struct fl_error *err);

#endif
