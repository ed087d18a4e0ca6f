/* wire-examples: the reference encoder behind PROTOCOL.md section 8.
 *
 * Builds five frames with msgpack-c alone (not with flowlog's own codec, so the examples are an
 * independent check of the format), then prints each as a hex dump and as an annotated listing,
 * one msgpack item a line. `proto/wire-examples` regenerates the text of section 8; make check
 * compares the two (tests/integration/protocol-doc.sh), so the document cannot drift. */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* 2026-11-21T22:39:03.123456Z as seconds and nanoseconds. */
#define EX_SEC 1795300743
#define EX_NSEC 123456000u

/* Pack a NUL-terminated string. */
static void str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* The hello request of a writer token. */
static void build_hello(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 4);
    str(pk, "id"), msgpack_pack_uint64(pk, 0);
    str(pk, "op"), str(pk, "hello");
    str(pk, "version"), msgpack_pack_uint64(pk, 1);
    str(pk, "token"), str(pk, "s3cr3t");
}

/* The server's answer to it. */
static void build_hello_reply(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    str(pk, "id"), msgpack_pack_uint64(pk, 0);
    str(pk, "ok"), msgpack_pack_true(pk);
    str(pk, "result"), msgpack_pack_map(pk, 4);
    str(pk, "server"), str(pk, "flowlog 0.1.0");
    str(pk, "version"), msgpack_pack_uint64(pk, 1);
    str(pk, "tenant"), str(pk, "acme");
    str(pk, "role"), str(pk, "writer");
}

/* An append of one event with an idempotency key. */
static void build_append(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    str(pk, "id"), msgpack_pack_uint64(pk, 1);
    str(pk, "op"), str(pk, "append");
    str(pk, "events"), msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 3);
    str(pk, "type"), str(pk, "flow_registered");
    str(pk, "event_id"), str(pk, "e-1");
    str(pk, "data"), msgpack_pack_map(pk, 2);
    str(pk, "flow_id"), str(pk, "abc-123");
    str(pk, "flow_name"), str(pk, "abc.xml");
}

/* Its acknowledgement: seq 1, with the commit time as a timestamp extension. */
static void build_ack(msgpack_packer *pk)
{
    msgpack_timestamp ts = {EX_SEC, EX_NSEC};

    msgpack_pack_map(pk, 3);
    str(pk, "id"), msgpack_pack_uint64(pk, 1);
    str(pk, "ok"), msgpack_pack_true(pk);
    str(pk, "result"), msgpack_pack_map(pk, 1);
    str(pk, "results"), msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 3);
    str(pk, "seq"), msgpack_pack_uint64(pk, 1);
    str(pk, "ts"), msgpack_pack_timestamp(pk, &ts);
    str(pk, "duplicate"), msgpack_pack_false(pk);
}

/* A refused append: expected_version 0 but the flow is at version 3. */
static void build_error(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    str(pk, "id"), msgpack_pack_uint64(pk, 2);
    str(pk, "ok"), msgpack_pack_false(pk);
    str(pk, "error"), msgpack_pack_map(pk, 4);
    str(pk, "code"), str(pk, "conflict");
    str(pk, "message"),
        str(pk, "expected_version is 0 but the flow's version is 3; re-read the flow and retry");
    str(pk, "index"), msgpack_pack_uint64(pk, 0);
    str(pk, "version"), msgpack_pack_uint64(pk, 3);
}

/* ---- printing ---- */

/* The hex dump of a whole frame, 16 bytes a line, offsets from the frame's first byte. */
static void hexdump(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        printf("%04zx ", i);
        for (size_t j = i; j < i + 16 && j < n; j++)
            printf(" %02x", p[j]);
        printf("\n");
    }
}

/* Print one listing line: offset, the item's bytes (up to 8 shown), indentation, meaning. */
static void line(const uint8_t *base, size_t off, size_t n, int depth, const char *what)
{
    char hex[64] = "";
    size_t shown = n > 8 ? 7 : n, k = 0;

    for (size_t i = 0; i < shown; i++)
        k += (size_t)snprintf(hex + k, sizeof hex - k, "%02x ", base[off + i]);
    if (shown < n)
        snprintf(hex + k, sizeof hex - k, "..");
    printf("%04zx  %-24s %*s%s\n", off, hex, depth * 2, "", what);
}

static size_t walk(const uint8_t *p, size_t off, int depth);

/* A string item: header then text. */
static size_t walk_str(const uint8_t *p, size_t off, size_t hdr, size_t len, int depth)
{
    char what[160];

    snprintf(what, sizeof what, "str, %zu bytes: \"%.*s\"", len, (int)len,
             (const char *)p + off + hdr);
    line(p, off, hdr + len, depth, what);
    return hdr + len;
}

/* A container: header, then its children one level deeper. */
static size_t walk_container(const uint8_t *p, size_t off, size_t hdr, size_t count, int is_map,
                             int depth)
{
    char what[80];
    size_t pos = off + hdr;

    snprintf(what, sizeof what, "%s of %zu %s", is_map ? "map" : "array", count,
             is_map ? (count == 1 ? "pair" : "pairs") : (count == 1 ? "item" : "items"));
    line(p, off, hdr, depth, what);
    for (size_t i = 0; i < count * (is_map ? 2 : 1); i++)
        pos += walk(p, pos, depth + 1);
    return pos - off;
}

/* A timestamp extension (fixext 8, type -1): 30-bit nanoseconds, 34-bit seconds. */
static size_t walk_ts64(const uint8_t *p, size_t off, int depth)
{
    uint64_t v = 0;
    char what[160];

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[off + 2 + i];
    snprintf(what, sizeof what,
             "timestamp (fixext 8, type -1): nanoseconds %llu << 34 | seconds %llu "
             "= 2026-11-21T22:39:03.123456Z",
             (unsigned long long)(v >> 34), (unsigned long long)(v & 0x3ffffffffULL));
    line(p, off, 10, depth, what);
    return 10;
}

/* One msgpack item at off (only the forms these examples use); returns its size. */
static size_t walk(const uint8_t *p, size_t off, int depth)
{
    uint8_t b = p[off];
    char what[80];

    if (b <= 0x7f) {
        snprintf(what, sizeof what, "positive fixint %u", b);
        line(p, off, 1, depth, what);
        return 1;
    }
    if ((b & 0xf0) == 0x80)
        return walk_container(p, off, 1, b & 0x0f, 1, depth);
    if ((b & 0xf0) == 0x90)
        return walk_container(p, off, 1, b & 0x0f, 0, depth);
    if ((b & 0xe0) == 0xa0)
        return walk_str(p, off, 1, b & 0x1f, depth);
    if (b == 0xd9)
        return walk_str(p, off, 2, p[off + 1], depth);
    if (b == 0xc2 || b == 0xc3) {
        line(p, off, 1, depth, b == 0xc3 ? "true" : "false");
        return 1;
    }
    if (b == 0xc0) {
        line(p, off, 1, depth, "nil");
        return 1;
    }
    if (b == 0xd7 && p[off + 1] == 0xff)
        return walk_ts64(p, off, depth);
    line(p, off, 1, depth, "(form not used in these examples)");
    return 1;
}

/* Build one frame and print its dump and its listing. */
static int example(const char *title, void (*build)(msgpack_packer *))
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    const uint8_t *p;
    size_t n;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&sb, "\0\0\0\0", 4);
    build(&pk);
    if (!sb.data)
        return -1;
    p = (const uint8_t *)sb.data;
    n = sb.size - 4;
    sb.data[0] = (char)(n >> 24);
    sb.data[1] = (char)(n >> 16);
    sb.data[2] = (char)(n >> 8);
    sb.data[3] = (char)n;
    printf("### %s\n\n%zu bytes: a 4-byte length, then %zu bytes of msgpack.\n\n```\n", title,
           sb.size, n);
    hexdump(p, sb.size);
    printf("```\n\n```\noffset bytes                    meaning\n");
    char what[64];
    snprintf(what, sizeof what, "frame length: %zu payload bytes (u32 big-endian)", n);
    line(p, 0, 4, 0, what);
    if (walk(p, 4, 0) != n) {
        msgpack_sbuffer_destroy(&sb);
        return -1;
    }
    printf("```\n\n");
    msgpack_sbuffer_destroy(&sb);
    return 0;
}

/* Print section 8 of PROTOCOL.md. */
int main(void)
{
    int rc = 0;

    rc |= example("8.1 hello (a writer's token, so no \"tenant\")", build_hello);
    rc |= example("8.2 the hello reply", build_hello_reply);
    rc |= example("8.3 append of one event", build_append);
    rc |= example("8.4 its acknowledgement", build_ack);
    rc |= example("8.5 an error reply (conflict)", build_error);
    if (rc)
        fprintf(stderr, "wire-examples: an example did not walk to its end\n");
    return rc ? 1 : 0;
}
