#define _GNU_SOURCE
#include <dlfcn.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdint.h>
#include <x86intrin.h>
enum { OPS = 6 };
static const char *opn[OPS] = {"put", "get", "del", "cput", "cget", "cdel"};
static __thread uint64_t cyc[16][OPS], cnt[16][OPS], tbeg, nops;
static __thread int inw;
static uint64_t acyc[16][OPS], acnt[16][OPS], atx, atot, acom;
__attribute__((destructor)) static void dump(void) {
    uint64_t tot = 0; for (int i = 0; i < 16; i++) for (int j = 0; j < OPS; j++) tot += acyc[i][j];
    fprintf(stderr, "SHIM small txns %lu: begin..commit %.1f Mcyc, lmdb ops %.1f Mcyc, commit %.1f Mcyc\n", (unsigned long)atx, atot/1e6, tot/1e6, acom/1e6);
    for (int i = 0; i < 16; i++) for (int j = 0; j < OPS; j++) if (acnt[i][j]) fprintf(stderr, "SHIM  dbi %d %-4s n=%8lu  %.1f Mcyc  %.0f cyc/op\n", i, opn[j], (unsigned long)acnt[i][j], acyc[i][j] / 1e6, (double)acyc[i][j] / acnt[i][j]);
}
#define R(name, ret, args) static ret(*real_##name) args;
R(mdb_put, int, (MDB_txn *, MDB_dbi, MDB_val *, MDB_val *, unsigned))
R(mdb_get, int, (MDB_txn *, MDB_dbi, MDB_val *, MDB_val *))
R(mdb_del, int, (MDB_txn *, MDB_dbi, MDB_val *, MDB_val *))
R(mdb_cursor_put, int, (MDB_cursor *, MDB_val *, MDB_val *, unsigned))
R(mdb_cursor_get, int, (MDB_cursor *, MDB_val *, MDB_val *, MDB_cursor_op))
R(mdb_cursor_del, int, (MDB_cursor *, unsigned))
R(mdb_txn_commit, int, (MDB_txn *))
R(mdb_txn_begin, int, (MDB_env *, MDB_txn *, unsigned, MDB_txn **))
#define L(name) if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)
#define T(dbi, op, call) uint64_t t0 = __rdtsc(); int rc = call; cyc[(dbi)&15][op] += __rdtsc() - t0; cnt[(dbi)&15][op]++; nops++; return rc
int mdb_put(MDB_txn *t, MDB_dbi d, MDB_val *k, MDB_val *v, unsigned f) { L(mdb_put); T(d, 0, real_mdb_put(t, d, k, v, f)); }
int mdb_get(MDB_txn *t, MDB_dbi d, MDB_val *k, MDB_val *v) { L(mdb_get); T(d, 1, real_mdb_get(t, d, k, v)); }
int mdb_del(MDB_txn *t, MDB_dbi d, MDB_val *k, MDB_val *v) { L(mdb_del); T(d, 2, real_mdb_del(t, d, k, v)); }
int mdb_cursor_put(MDB_cursor *c, MDB_val *k, MDB_val *v, unsigned f) { L(mdb_cursor_put); MDB_dbi d = mdb_cursor_dbi(c); T(d, 3, real_mdb_cursor_put(c, k, v, f)); }
int mdb_cursor_get(MDB_cursor *c, MDB_val *k, MDB_val *v, MDB_cursor_op o) { L(mdb_cursor_get); MDB_dbi d = mdb_cursor_dbi(c); T(d, 4, real_mdb_cursor_get(c, k, v, o)); }
int mdb_cursor_del(MDB_cursor *c, unsigned f) { L(mdb_cursor_del); MDB_dbi d = mdb_cursor_dbi(c); T(d, 5, real_mdb_cursor_del(c, f)); }
int mdb_txn_begin(MDB_env *e, MDB_txn *p, unsigned f, MDB_txn **t) {
    L(mdb_txn_begin);
    if (!(f & MDB_RDONLY) && !p) { tbeg = __rdtsc(); nops = 0; for (int i = 0; i < 16; i++) for (int j = 0; j < OPS; j++) cyc[i][j] = cnt[i][j] = 0; }
    return real_mdb_txn_begin(e, p, f, t);
}
int mdb_txn_commit(MDB_txn *t) {
    L(mdb_txn_commit);
    uint64_t t0 = __rdtsc();
    int rc = real_mdb_txn_commit(t);
    uint64_t t1 = __rdtsc();
    if (nops < 5000) { for (int i = 0; i < 16; i++) for (int j = 0; j < OPS; j++) { acyc[i][j] += cyc[i][j]; acnt[i][j] += cnt[i][j]; } atx++; atot += t0 - tbeg; acom += t1 - t0; }
    if (nops > 100000) {
        uint64_t tot = 0;
        for (int i = 0; i < 16; i++) for (int j = 0; j < OPS; j++) tot += cyc[i][j];
        fprintf(stderr, "SHIM txn: total %.1f Mcyc, in lmdb ops %.1f Mcyc, commit %.1f Mcyc, ops %lu\n", (t0 - tbeg) / 1e6, tot / 1e6, (t1 - t0) / 1e6, (unsigned long)nops);
        for (int i = 0; i < 16; i++) for (int j = 0; j < OPS; j++) if (cnt[i][j]) fprintf(stderr, "SHIM  dbi %d %-4s n=%8lu  %.1f Mcyc  %.0f cyc/op\n", i, opn[j], (unsigned long)cnt[i][j], cyc[i][j] / 1e6, (double)cyc[i][j] / cnt[i][j]);
    }
    return rc;
}
