/*
 * produce_floor: the least a server can spend on the bench's produce-conns rows on this
 * machine.
 *
 * Those rows open N connections that each loop one Produce v7 (acks=1) of one batch to one
 * of six partitions and wait for its answer, and charge the broker's CPU per record. Much
 * of that CPU is the kernel's: receiving each request over loopback TCP (the sender pays
 * for the receiver's side too), copying the batch into the page cache, sending the answer,
 * and the epoll wake-ups in between, for however many sockets. This program does only
 * that: one epoll loop on one thread, a recv per readiness, one write of each batch to its
 * partition's file (no checksum, no index, no fsync: acks=1), one send per answer. What
 * the bench measures here is the floor the broker's figure at N connections is read
 * against.
 *
 * Each partition's file is a ring of RING_BYTES (a batch may run a little past its end),
 * written round and round, so the writes land in pages already in the page cache. A
 * broker's appends fill new pages, and on this machine class a new page costs anything
 * from 0.2 to 2.4 µs of CPU per KiB, depending on whether the host took its memory back
 * (the bench's page-cache probe measures both), which swamped the rest in the first
 * measurements of this program. The floor leaves that cost out; the probe gives it.
 *
 * It is not a broker and not built on the broker's code: it answers ApiVersions (with no
 * APIs) and Produce v7 of one topic, and closes a connection that sends anything else.
 * Requests are received into one shared buffer; only a connection whose request arrived in
 * parts holds memory of its own until the rest comes.
 *
 *   produce_floor PORT DIR
 *
 * Writes the partitions' files into DIR (which must exist). Prints "ready" on stdout once
 * listening; runs until SIGTERM or SIGINT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "floor.h"

#define MAX_CONNS 65536
#define FRAME_MAX (1 << 20)
#define PARTITIONS_MAX 64
#define RING_BYTES (16u << 20)
#define PRODUCE 0
#define API_VERSIONS 18

struct conn {
    uint32_t have;     /* bytes of a request that arrived in parts, kept in `partial` */
    uint8_t *partial;  /* FRAME_MAX + 4 bytes while `have` > 0 */
};

static struct conn *conns[MAX_CONNS];
static uint8_t scratch[FRAME_MAX + 4];
static int files[PARTITIONS_MAX];
static uint64_t write_position[PARTITIONS_MAX];
static int64_t next_offset[PARTITIONS_MAX];

static void close_conn(int epfd, int fd) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    if (conns[fd]) free(conns[fd]->partial);
    free(conns[fd]);
    conns[fd] = NULL;
}

static int partition_file(uint32_t partition) {
    return partition < PARTITIONS_MAX ? files[partition] : -1;
}

/* Writes each batch of a whole Produce v7 frame to its partition's file and builds the
 * answer in `answer`; returns the answer's length, or -1 if the frame is not one this
 * program reads (one topic; the batch's record count is read from its header). */
static int answer_produce_v7(const uint8_t *frame, uint32_t frame_len, uint8_t *answer,
                             size_t answer_max) {
    /* p never passes end: each read checks what is left first. */
    const uint8_t *p = frame + 4, *end = frame + 4 + frame_len;
#define LEFT ((size_t)(end - p))
    if (LEFT < 10) return -1;
    uint32_t correlation = get32(p + 4);
    uint16_t client_len = get16(p + 8);
    size_t header_len = 10 + (client_len == 0xffff ? 0 : client_len);
    if (LEFT < header_len + 2) return -1;
    p += header_len;
    uint16_t txn_len = get16(p);
    size_t txn_field = 2 + (txn_len == 0xffff ? 0 : txn_len);
    if (LEFT < txn_field + 2 + 4 + 4) return -1;
    p += txn_field + 6; /* transactional id, acks, timeout */
    if (get32(p) != 1) return -1;
    p += 4;
    if (LEFT < 2) return -1;
    size_t name_len = get16(p);
    if (LEFT < 2 + name_len + 4 || answer_max < 4 + 4 + 4 + 2 + name_len + 4 + 4) return -1;
    uint8_t *out = put32(answer + 4, correlation);
    out = put32(out, 1);
    memcpy(out, p, 2 + name_len);
    out += 2 + name_len;
    p += 2 + name_len;
    uint32_t partitions = get32(p);
    p += 4;
    if (partitions > (answer_max - (size_t)(out - answer) - 8) / 30) return -1;
    out = put32(out, partitions);
    for (uint32_t i = 0; i < partitions; i++) {
        if (LEFT < 8) return -1;
        uint32_t partition = get32(p);
        uint32_t size = get32(p + 4);
        p += 8;
        /* A batch: base offset 8, length 4, leader epoch 4, magic 1, crc 4, attributes 2,
         * last offset delta 4, ... ; records = last offset delta + 1. */
        if (size > LEFT || size < 61) return -1;
        int fd = partition_file(partition);
        if (fd < 0) return -1;
        off_t at = (off_t)(write_position[partition] % RING_BYTES);
        if (pwrite(fd, p, size, at) != (ssize_t)size) return -1;
        write_position[partition] += size;
        int64_t base = next_offset[partition];
        next_offset[partition] += (int64_t)get32(p + 23) + 1;
        p += size;
        out = put32(out, partition);
        out = put16(out, 0);              /* error */
        out = put64(out, (uint64_t)base); /* base offset */
        out = put64(out, UINT64_MAX);     /* log append time: none (-1) */
        out = put64(out, 0);              /* log start offset */
    }
    if (p != end) return -1;
#undef LEFT
    out = put32(out, 0); /* throttle_time_ms */
    put32(answer, (uint32_t)(out - answer) - 4);
    return (int)(out - answer);
}

/* Answers the whole frame at `frame`; returns 0, or -1 to close the connection. */
static int answer(int fd, const uint8_t *frame, uint32_t frame_len) {
    uint8_t out[4096];
    if (frame_len < 8) return -1;
    uint16_t api = get16(frame + 4), version = get16(frame + 6);
    int len;
    if (api == API_VERSIONS) {
        /* Every client says ApiVersions first: answered at once, with no APIs. */
        put16(put32(put32(put32(out, 10), get32(frame + 8)), 0), 0);
        len = 14;
    } else if (api == PRODUCE && version == 7) {
        len = answer_produce_v7(frame, frame_len, out, sizeof out);
        if (len < 0) return -1;
    } else {
        return -1;
    }
    /* A small answer into a socket whose client waits for it: one send, whole, or the
     * connection is dropped (the bench's clients send one request at a time). */
    return send(fd, out, (size_t)len, 0) == len ? 0 : -1;
}

/* Reads what `fd` has; answers a request once it is whole. Returns -1 to close. */
static int on_readable(int fd, struct conn *c) {
    if (c->have == 0) {
        ssize_t got = recv(fd, scratch, sizeof scratch, 0);
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        if (got <= 0) return -1;
        if (got >= 4) {
            uint32_t frame_len = get32(scratch);
            if (frame_len > FRAME_MAX) return -1;
            if ((size_t)got == frame_len + 4) return answer(fd, scratch, frame_len);
            if ((size_t)got > frame_len + 4) return -1; /* no pipelining */
        }
        c->partial = malloc(FRAME_MAX + 4);
        if (!c->partial) return -1;
        memcpy(c->partial, scratch, (size_t)got);
        c->have = (uint32_t)got;
        return 0;
    }
    ssize_t got = recv(fd, c->partial + c->have, FRAME_MAX + 4 - c->have, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (got <= 0) return -1;
    c->have += (uint32_t)got;
    if (c->have < 4) return 0;
    uint32_t frame_len = get32(c->partial);
    if (frame_len > FRAME_MAX || c->have > frame_len + 4) return -1;
    if (c->have < frame_len + 4) return 0;
    int result = answer(fd, c->partial, frame_len);
    free(c->partial);
    c->partial = NULL;
    c->have = 0;
    return result;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: produce_floor PORT DIR\n");
        return 2;
    }
    int port = atoi(argv[1]);
    for (int i = 0; i < PARTITIONS_MAX; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/partition-%d.log", argv[2], i);
        files[i] = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (files[i] < 0) {
            perror("produce_floor: open");
            return 1;
        }
    }
    floor_signals();
    int listener;
    /* The broker's socket options at their defaults (Kafka's): a 100 KiB receive buffer
     * on the listener, which accepted sockets inherit, and a 100 KiB send buffer,
     * keepalive and no Nagle on each accepted socket. */
    int buffer_bytes = 102400;
    int epfd = floor_listen("produce_floor", port, buffer_bytes, &listener);
    printf("ready\n");
    fflush(stdout);

    struct epoll_event events[256];
    while (!stopping) {
        int n = epoll_wait(epfd, events, 256, -1);
        if (n < 0 && errno != EINTR) {
            perror("produce_floor: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int client;
                while ((client = floor_accept(listener, epfd, buffer_bytes, MAX_CONNS)) >= 0) {
                    conns[client] = calloc(1, sizeof(struct conn));
                    if (!conns[client]) close(client);
                }
                continue;
            }
            struct conn *c = conns[fd];
            if (c && on_readable(fd, c) < 0) close_conn(epfd, fd);
        }
    }
    return 0;
}
