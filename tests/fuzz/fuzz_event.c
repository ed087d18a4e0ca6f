/* fuzz_event.c: libFuzzer target for event form validation (src/event.c), what the server runs
 * on every event of an append before anything touches the store.
 *
 * The input is one msgpack object, decoded with fl_wire_decode (the server's fl_wire_decode_in
 * decodes the same, which fuzz_wire checks): an event map,
 * or a request map whose "events" array holds events. Each event is parsed with fl_event_parse.
 * An accepted event's canonical data must itself be accepted, both checked and trusted (as the
 * log's replay does), and canonicalise to the same bytes and payload hash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "schema.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stop the run with a message: libFuzzer reports the input as a crash. */
static void fail(const char *what, const struct fl_error *e)
{
    fprintf(stderr, "fuzz_event: %s%s%s\n", what, e ? ": " : "", e ? e->msg : "");
    abort();
}

/* A small event limit, so that inputs up to -max_len reach the too_large path too. */
#define FUZZ_MAX_EVENT 4096

/* Replay ev's canonical data through fl_event_parse_parts (trusted or not): same bytes out. */
static void check_canonical(const struct fl_event *ev, int trusted)
{
    const struct fl_event_def *d = &fl_event_defs[ev->type];
    struct fl_event_limits lim = {.max_event = FUZZ_MAX_EVENT, .trusted = trusted};
    struct fl_event again;
    struct fl_error err;
    msgpack_unpacked u;

    fl_error_clear(&err);
    if (fl_wire_decode(ev->data, ev->data_len, &u, &err) != 0)
        fail("canonical data does not decode", &err);
    if (fl_event_parse_parts(d->name, strlen(d->name), ev->event_id.len ? ev->event_id.p : NULL,
                             ev->event_id.len, &u.data, &lim, &again, &err) != 0)
        fail("canonical data is rejected on replay", &err);
    if (again.type != ev->type || again.data_len != ev->data_len ||
        memcmp(again.data, ev->data, ev->data_len) != 0 ||
        memcmp(again.payload_hash, ev->payload_hash, sizeof ev->payload_hash) != 0)
        fail("canonical data is not a fixed point", NULL);
    fl_event_free(&again);
    msgpack_unpacked_destroy(&u);
}

/* Parse one event object; on success look at every field and replay its canonical form. */
static void parse_one(const msgpack_object *o)
{
    struct fl_event_limits lim = {.max_event = FUZZ_MAX_EVENT, .trusted = 0};
    struct fl_event ev;
    struct fl_error err;
    int rc;

    fl_error_clear(&err);
    rc = fl_event_parse(o, &lim, &ev, &err);
    if (rc != 0) {
        if ((rc != FL_EBAD_REQUEST && rc != FL_ETOO_LARGE) || err.code != rc || !err.msg[0])
            fail("a rejected event must be bad_request or too_large with a message", &err);
        if (ev.data)
            fail("a rejected event holds data", NULL);
        return;
    }
    if ((int)ev.type < 0 || ev.type >= FL_EV_COUNT || !ev.data)
        fail("an accepted event has no type or data", NULL);
    const struct fl_event_def *d = &fl_event_defs[ev.type];
    for (size_t i = 0; i < d->nfields; i++) {
        const struct fl_val *v = fl_event_get(&ev, d->fields[i].name);
        if (v != &ev.v[i])
            fail("fl_event_get does not find a schema field", NULL);
        if (d->fields[i].required && !v->set)
            fail("an accepted event lacks a required field", NULL);
    }
    check_canonical(&ev, 0);
    check_canonical(&ev, 1);
    fl_event_free(&ev);
    fl_event_free(&ev); /* freeing twice is allowed */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msgpack_unpacked u;
    struct fl_error err;
    const msgpack_object *events;

    fl_error_clear(&err);
    if (fl_wire_decode(data, size, &u, &err) != 0) {
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    parse_one(&u.data);
    events = fl_wire_get(&u.data, "events");
    if (events && events->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < events->via.array.size; i++)
            parse_one(&events->via.array.ptr[i]);
    msgpack_unpacked_destroy(&u);
    return 0;
}
