/* err.h: the error codes of the contract (CONTRACT.md section 5) and the error record that carries them.
 *
 * Functions across flowlog return 0 or a negative enum fl_err. Where a caller needs more than the
 * code (a message a person can act on, the index of the failing event, a flow's actual version),
 * the callee fills a struct fl_error. Raw errno and MDB codes never cross a module boundary. */
#ifndef FL_ERR_H
#define FL_ERR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

enum fl_err {
    FL_OK = 0,
    FL_EBAD_REQUEST = -1,
    FL_EUNAUTHENTICATED = -2,
    FL_EFORBIDDEN = -3,
    FL_ENOT_FOUND = -4,
    FL_EALREADY_EXISTS = -5,
    FL_EINVALID_TRANSITION = -6,
    FL_ECONFLICT = -7,
    FL_EIDEMPOTENCY_MISMATCH = -8,
    FL_ETOO_LARGE = -9,
    FL_EUNAVAILABLE = -10,
    FL_EINTERNAL = -11,
};
#define FL_ERR_COUNT 12

#define FL_ERR_MSG_MAX 512

struct fl_error {
    int code;             /* enum fl_err; 0 when there is no error */
    int64_t index;        /* index of the failing event in an append, or -1 */
    int64_t version;      /* with FL_ECONFLICT: the flow's actual version, else -1 */
    char msg[FL_ERR_MSG_MAX];
};

/* The stable wire/CLI name of a code ("bad_request"); "internal" for unknown codes. */
const char *fl_err_name(int code);
/* The code for a stable name, or FL_EINTERNAL if the name is unknown. */
int fl_err_from_name(const char *name, size_t len);
/* Reset an error record to "no error". */
void fl_error_clear(struct fl_error *e);
/* Fill e (if not NULL) with code and a printf-style message; returns code so callers can
 * `return fl_error_set(...)`. */
int fl_error_set(struct fl_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int fl_error_vset(struct fl_error *e, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
