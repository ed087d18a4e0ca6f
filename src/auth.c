/* auth.c: the tokens file, the first-start admin token, and constant-time token lookup. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diag.h"

#define AUTH_FILE_MAX (16u * 1024 * 1024)
#define AUTH_RANDOM_BYTES 32

static const uint8_t auth_zero_key[FL_CHAIN_LEN];

static const char *const role_names[] = {"reader", "writer", "admin"};

const char *auth_role_name(enum auth_role r)
{
    return (unsigned)r < 3 ? role_names[r] : "unknown";
}

int auth_tenant_valid(const char *s, size_t len)
{
    if (len < 1 || len > FL_TENANT_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* A token is 1..256 printable, non-blank ASCII bytes: it must survive a text file and argv. */
static int auth_token_valid(const char *s, size_t len)
{
    if (len < 1 || len > AUTH_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

/* Tokens are kept only as digests, so a memory dump does not hand them out. */
static void auth_digest(const char *token, size_t len, uint8_t out[FL_CHAIN_LEN])
{
    fl_hash_chain(auth_zero_key, token, len, out);
}

/* Append one entry, growing the array. */
static int auth_add(struct auth *a, const char *token, size_t tlen, const char *tenant,
                    size_t tenlen, enum auth_role role)
{
    struct auth_entry *v = realloc(a->v, (a->n + 1) * sizeof *v);

    if (!v)
        return FL_EINTERNAL;
    a->v = v;
    memset(&v[a->n], 0, sizeof v[a->n]);
    auth_digest(token, tlen, v[a->n].digest);
    memcpy(v[a->n].tenant, tenant, tenlen);
    v[a->n].tenant[tenlen] = '\0';
    v[a->n].role = role;
    a->n++;
    return 0;
}

/* Split a line into at most 4 blank-separated fields, stopping at a '#' that starts a field.
 * Returns the number of fields found (4 means "too many"). */
static int auth_split(const char *p, const char *end, const char *f[4], size_t flen[4])
{
    int n = 0;

    while (p < end && n < 4) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
            p++;
        if (p == end || *p == '#')
            break;
        f[n] = p;
        while (p < end && *p != ' ' && *p != '\t' && *p != '\r')
            p++;
        flen[n] = (size_t)(p - f[n]);
        n++;
    }
    return n;
}

/* Check one non-empty line's fields and add its entry. */
static int auth_parse_line(struct auth *a, const char *f[4], const size_t flen[4], int nf,
                           const char *origin, unsigned lineno, struct fl_error *err)
{
    int role = -1;
    uint8_t d[FL_CHAIN_LEN];

    if (nf != 3)
        return fl_error_set(
            err, FL_EBAD_REQUEST, "%s:%u: expected 'TOKEN TENANT ROLE', found %s%d field%s", origin,
            lineno, nf > 3 ? "more than " : "", nf > 3 ? 3 : nf, nf == 1 ? "" : "s");
    if (!auth_token_valid(f[0], flen[0]))
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "%s:%u: a token must be 1..%d printable ASCII characters, no spaces",
                            origin, lineno, AUTH_TOKEN_MAX);
    /* The messages below never quote the field: if the columns are out of order, it may be
     * the token. */
    if (!(flen[1] == 1 && f[1][0] == '*') && !auth_tenant_valid(f[1], flen[1]))
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "%s:%u: the tenant (second field) is not valid: use 1..64 of "
                            "A-Z a-z 0-9 . _ : - (or * for an operator)",
                            origin, lineno);
    for (int i = 0; i < 3; i++)
        if (strlen(role_names[i]) == flen[2] && memcmp(role_names[i], f[2], flen[2]) == 0)
            role = i;
    if (role < 0)
        return fl_error_set(err, FL_EBAD_REQUEST,
                            "%s:%u: the role (third field) is not one of reader, writer, admin",
                            origin, lineno);
    auth_digest(f[0], flen[0], d);
    for (size_t i = 0; i < a->n; i++)
        if (fl_hash_ct_compare(a->v[i].digest, d, sizeof d) == 0)
            return fl_error_set(err, FL_EBAD_REQUEST,
                                "%s:%u: this token already appears on an earlier line; each "
                                "token must map to one tenant and role",
                                origin, lineno);
    if (flen[0] < AUTH_TOKEN_MIN_SAFE)
        fl_warn("%s:%u: token is shorter than %d characters and easy to guess", origin, lineno,
                AUTH_TOKEN_MIN_SAFE);
    if (auth_add(a, f[0], flen[0], f[1], flen[1], (enum auth_role)role) != 0)
        return fl_error_set(err, FL_EINTERNAL, "out of memory loading %s", origin);
    return 0;
}

int auth_parse(struct auth *a, const char *text, size_t len, const char *origin,
               struct fl_error *err)
{
    const char *p = text, *end = text + len;
    unsigned lineno = 0;
    int rc;

    if (memchr(text, '\0', len)) {
        rc = fl_error_set(err, FL_EBAD_REQUEST, "%s: contains a NUL byte; is it a text file?",
                          origin);
        goto fail;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *eol = nl ? nl : end;
        const char *f[4];
        size_t flen[4];
        int nf;

        lineno++;
        nf = auth_split(p, eol, f, flen);
        if (nf > 0 && (rc = auth_parse_line(a, f, flen, nf, origin, lineno, err)) != 0)
            goto fail;
        p = nl ? nl + 1 : end;
    }
    if (a->n == 0) {
        rc = fl_error_set(err, FL_EBAD_REQUEST,
                          "%s: holds no tokens, so nobody could connect; add 'TOKEN TENANT ROLE' "
                          "lines",
                          origin);
        goto fail;
    }
    return 0;
fail:
    auth_free(a);
    return rc;
}

/* Read a whole small file that only its owner may access; caller frees *out. */
static int auth_read_private(const char *path, char **out, size_t *len, struct fl_error *err)
{
    struct stat st;
    char *buf = NULL;
    size_t got = 0;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return fl_error_set(err, FL_EUNAVAILABLE, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = fl_error_set(err, FL_EUNAVAILABLE, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = fl_error_set(err, FL_EBAD_REQUEST, "%s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        rc = fl_error_set(err, FL_EFORBIDDEN,
                          "%s holds secrets but group or others can access it (mode %04o); "
                          "run 'chmod 600 %s' and start again",
                          path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    if ((uint64_t)st.st_size > AUTH_FILE_MAX) {
        rc = fl_error_set(err, FL_ETOO_LARGE, "%s is larger than %u bytes", path, AUTH_FILE_MAX);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = fl_error_set(err, FL_EINTERNAL, "out of memory reading %s", path);
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = fl_error_set(err, FL_EUNAVAILABLE, "cannot read %s: %s", path,
                              r < 0 ? strerror(errno) : "file shrank while reading");
            goto out;
        }
        got += (size_t)r;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
    rc = 0;
out:
    if (buf) {
        explicit_bzero(buf, (size_t)st.st_size);
        free(buf);
    }
    close(fd);
    return rc;
}

int auth_load_file(struct auth *a, const char *path, struct fl_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    if ((rc = auth_read_private(path, &text, &len, err)) != 0)
        return rc;
    rc = auth_parse(a, text, len, path, err);
    explicit_bzero(text, len);
    free(text);
    return rc;
}

/* Write a fresh random token to path, which must not exist yet (O_EXCL: never overwrite). */
static int auth_create_token_file(const char *path, struct fl_error *err)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[AUTH_RANDOM_BYTES];
    char line[2 * AUTH_RANDOM_BYTES + 1];
    size_t off = 0;
    int fd, rc = 0;

    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return fl_error_set(err, FL_EINTERNAL, "cannot get random bytes for a token: %s",
                            strerror(errno));
    for (size_t i = 0; i < sizeof raw; i++) {
        line[2 * i] = hex[raw[i] >> 4];
        line[2 * i + 1] = hex[raw[i] & 15];
    }
    line[sizeof line - 1] = '\n';
    explicit_bzero(raw, sizeof raw);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? 1
                             : fl_error_set(err, FL_EUNAVAILABLE, "cannot create %s: %s", path,
                                            strerror(errno));
        goto out;
    }
    while (off < sizeof line) {
        ssize_t w = write(fd, line + off, sizeof line - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = fl_error_set(err, FL_EUNAVAILABLE, "cannot write %s: %s", path, strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = fl_error_set(err, FL_EUNAVAILABLE, "cannot fsync %s: %s", path, strerror(errno));
    close(fd);
    if (rc != 0)
        unlink(path);
out:
    explicit_bzero(line, sizeof line);
    return rc;
}

int auth_load_admin_token(struct auth *a, const char *dir, int *created, struct fl_error *err)
{
    char path[4096];
    char *text = NULL;
    size_t len = 0, tlen;
    int rc;

    *created = 0;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, AUTH_ADMIN_TOKEN_FILE) >= sizeof path)
        return fl_error_set(err, FL_EBAD_REQUEST, "data directory path is too long");
    rc = auth_create_token_file(path, err);
    if (rc < 0)
        return rc;
    *created = rc == 0;
    if ((rc = auth_read_private(path, &text, &len, err)) != 0)
        return rc;
    tlen = strcspn(text, "\r\n");
    if (!auth_token_valid(text, tlen)) {
        rc = fl_error_set(
            err, FL_EBAD_REQUEST,
            "%s must hold one token (1..%d printable ASCII characters, no spaces) on its first "
            "line; delete it to have a new one made",
            path, AUTH_TOKEN_MAX);
    } else if (auth_add(a, text, tlen, AUTH_DEFAULT_TENANT, strlen(AUTH_DEFAULT_TENANT),
                        AUTH_ADMIN) != 0) {
        rc = fl_error_set(err, FL_EINTERNAL, "out of memory");
    }
    explicit_bzero(text, len);
    free(text);
    return rc;
}

const struct auth_entry *auth_lookup(const struct auth *a, const char *token, size_t len)
{
    const struct auth_entry *found = NULL;
    uint8_t d[FL_CHAIN_LEN];

    auth_digest(token, len, d);
    /* Visit every entry whatever matches: the time taken does not depend on which one did. */
    for (size_t i = 0; i < a->n; i++) {
        int eq = fl_hash_ct_compare(a->v[i].digest, d, sizeof d) == 0;
        if (eq && !found)
            found = &a->v[i];
    }
    explicit_bzero(d, sizeof d);
    return found;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    if (a->v)
        explicit_bzero(a->v, a->n * sizeof *a->v);
    free(a->v);
    a->v = NULL;
    a->n = 0;
}
