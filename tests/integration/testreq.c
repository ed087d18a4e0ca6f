/* testreq.c: see testreq.h. */
#include "testreq.h"

#include <string.h>

static void pack_s(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

void testreq_pack(msgpack_sbuffer *sb, uint64_t id, const char *op, const char *token)
{
    msgpack_packer pk;

    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, token ? 4 : 2);
    pack_s(&pk, "id");
    msgpack_pack_uint64(&pk, id);
    pack_s(&pk, "op");
    pack_s(&pk, op);
    if (token) {
        pack_s(&pk, "version");
        msgpack_pack_uint64(&pk, 1);
        pack_s(&pk, "token");
        pack_s(&pk, token);
    }
}

void testreq_pack_registration(msgpack_sbuffer *sb, const char *flow_id, const char *flow_name,
                               const char *event_id)
{
    msgpack_packer pk;

    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, event_id ? 3 : 2);
    if (event_id) {
        pack_s(&pk, "event_id");
        pack_s(&pk, event_id);
    }
    pack_s(&pk, "type");
    pack_s(&pk, "flow_registered");
    pack_s(&pk, "data");
    msgpack_pack_map(&pk, 2);
    pack_s(&pk, "flow_id");
    pack_s(&pk, flow_id);
    pack_s(&pk, "flow_name");
    pack_s(&pk, flow_name);
}
