/* testreq.h: msgpack requests and events for the C test clients that talk raw frames
 * (hostile, slow-clients) or use libflowlog (pipeline). */
#ifndef FL_TESTREQ_H
#define FL_TESTREQ_H

#include <msgpack.h>
#include <stdint.h>

/* {"id": id, "op": op} into sb (cleared first); with token, also hello's version and token. */
void testreq_pack(msgpack_sbuffer *sb, uint64_t id, const char *op, const char *token);
/* A flow_registered event {"type", "data": {flow_id, flow_name}} into sb (cleared first), with
 * "event_id" = event_id when it is not NULL. */
void testreq_pack_registration(msgpack_sbuffer *sb, const char *flow_id, const char *flow_name,
                               const char *event_id);

#endif
