/* json.h: msgpack <-> JSON (jansson) for the flowlog CLI.
 *
 * JSON to msgpack: objects -> maps, arrays -> arrays, integers -> msgpack integers, reals ->
 * float64, true/false -> bool, null -> nil, strings -> str. Nothing is approximated.
 * msgpack to JSON: as above backwards, plus bin -> lower-case hex string, timestamp extension
 * (type -1) -> RFC 3339 UTC string with microseconds, other extensions -> {"ext": TYPE,
 * "hex": "..."}. What JSON cannot hold exactly (integers above 2^63-1, non-UTF-8 strings,
 * non-string map keys, NaN) is an error, never silently changed. */
#ifndef FL_TOOLS_JSON_H
#define FL_TOOLS_JSON_H

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>

/* How timestamps are written. */
enum fjson_time {
    FJSON_TIME_RFC3339, /* 2026-11-21T22:39:03.123456Z (JSON output, the contract's form) */
    FJSON_TIME_HUMAN,   /* 2026-11-21 22:39:03.123456 (tables for people; UTC) */
};

#define FJSON_ERR_MAX 256

/* Pack v into pk. 0, or -1 with a message in err. */
int fjson_to_msgpack(const json_t *v, msgpack_packer *pk, char err[FJSON_ERR_MAX]);
/* A new JSON value for o (the caller json_decref's it), or NULL with a message in err. */
json_t *fjson_from_msgpack(const msgpack_object *o, enum fjson_time tf, char err[FJSON_ERR_MAX]);
/* Format a timestamp (microseconds) in the given style into out (at least 32 bytes). */
void fjson_format_time(int64_t us, enum fjson_time tf, char out[32]);

#endif
