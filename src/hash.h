/* hash.h: checksums (xxh3, fast, accidental corruption) and the tamper-evident hash chain
 * (BLAKE2b-256 from libsodium). The only module that includes xxhash or sodium. */
#ifndef FL_HASH_H
#define FL_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FL_CHAIN_LEN 32

/* xxh3-64 of buf, in canonical (big-endian) byte order, written to out[8]. */
void fl_hash_checksum(const void *buf, size_t len, uint8_t out[8]);
/* xxh3-64 as a number, for in-memory use only (index keys); never compared across machines. */
uint64_t fl_hash64(const void *buf, size_t len);
/* The same with a seed, for in-memory tables keyed by client-chosen strings: with a random seed,
 * nobody can choose keys that collide. */
uint64_t fl_hash64_seeded(const void *buf, size_t len, uint64_t seed);
/* 64 random bits from the system's CSPRNG (libsodium). */
uint64_t fl_hash_random64(void);
/* xxh3-128 over the concatenation a||b, canonical form, written to out[16]. */
void fl_hash_payload(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[16]);
/* out = BLAKE2b-256(prev || body). */
void fl_hash_chain(const uint8_t prev[FL_CHAIN_LEN], const void *body, size_t len,
                   uint8_t out[FL_CHAIN_LEN]);
/* Constant-time comparison; 0 when equal. */
int fl_hash_ct_compare(const void *a, const void *b, size_t len);
/* Initialise the crypto library; returns 0 or -1. Call once at start-up. */
int fl_hash_init(void);

#endif
