/* auth.h: tokens → (tenant, role). Loaded once at start-up from the tokens file, or from
 * DIR/admin.token, which is created on first start when no tokens file is given.
 *
 * Tokens are never kept in memory in clear: each is stored as BLAKE2b-256(token) and a presented
 * token is hashed and compared against every entry in constant time, so neither the comparison
 * nor an early exit reveals how much of a guess was right. Never log a token. */
#ifndef FL_AUTH_H
#define FL_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "hash.h"
#include "schema.h"

enum auth_role { AUTH_READER, AUTH_WRITER, AUTH_ADMIN };

#define AUTH_OPERATOR_TENANT "*"
#define AUTH_TOKEN_MAX 256
#define AUTH_TOKEN_MIN_SAFE 16 /* shorter tokens are accepted with a warning */
#define AUTH_ADMIN_TOKEN_FILE "admin.token"
#define AUTH_DEFAULT_TENANT "default"

struct auth_entry {
    uint8_t digest[FL_CHAIN_LEN];
    char tenant[FL_TENANT_MAX + 1]; /* "*" for an operator token */
    enum auth_role role;
};

struct auth {
    struct auth_entry *v;
    size_t n;
};

/* True if s[0..len) is a valid tenant id: [A-Za-z0-9._:-]{1,64}. */
int auth_tenant_valid(const char *s, size_t len);
/* "reader", "writer", "admin". */
const char *auth_role_name(enum auth_role r);

/* Parse tokens-file text (one "TOKEN TENANT ROLE" per line, '#' starts a comment) into a,
 * which must be zeroed or freed. origin names the file in messages. On error, err names the
 * line and a holds nothing. */
int auth_parse(struct auth *a, const char *text, size_t len, const char *origin,
               struct fl_error *err);
/* Load a tokens file: refuses a file that is not a regular file or that group or others can
 * access, then auth_parse. */
int auth_load_file(struct auth *a, const char *path, struct fl_error *err);
/* Without --tokens: use dir/admin.token (the token alone on one line) for tenant "default",
 * role admin, creating it (mode 0600, a random 256-bit hex token) if missing. *created is set
 * to 1 if the file was made by this call. The token is never printed. */
int auth_load_admin_token(struct auth *a, const char *dir, int *created, struct fl_error *err);

/* The entry for a presented token, or NULL. Takes the same time whichever entry matches. */
const struct auth_entry *auth_lookup(const struct auth *a, const char *token, size_t len);

/* Free the entries; accepts a zeroed struct. */
void auth_free(struct auth *a);

#endif
