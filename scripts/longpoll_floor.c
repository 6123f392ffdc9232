/*
 * longpoll_floor: the least a server can spend on parked Fetch long polls on this machine.
 *
 * The bench's idle-longpoll row parks 1000 Fetch v4 requests (max wait 500 ms) on idle
 * partitions, again and again, and charges the broker's CPU for it. Most of that CPU is
 * the kernel's: receiving each request and sending each answer over loopback TCP (the
 * sender pays for the receiver's side too), and waking up for the deadlines. This program
 * does only that: one epoll loop on one thread, one recv per request, one send per answer
 * at its deadline, a heap of deadlines, and an empty Fetch v4 answer for the partitions
 * asked. What the bench measures here is the floor the broker's figure is read against.
 *
 * It is not a broker and not built on the broker's code: it answers ApiVersions (with no
 * APIs) and Fetch v4, and closes a connection that sends anything else.
 *
 *   longpoll_floor PORT [grid]
 *
 * With "grid" a deadline moves earlier onto a grid as the broker's do (replica/waits.rs,
 * wait_deadline: a power-of-two number of milliseconds, at most 1/50 of the wait and 16),
 * so answers due close together go out in one wake-up.
 * Prints "ready" on stdout once listening; runs until SIGTERM or SIGINT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <time.h>

#include "floor.h"

#define MAX_CONNS 65536
#define FRAME_MAX 4096   /* a Fetch v4 of a few partitions of one topic */
#define ANSWER_MAX 8192
#define FETCH 1
#define API_VERSIONS 18

struct conn {
    int fd;
    uint64_t serial;            /* tells a reused descriptor's connection from its last */
    uint32_t have;              /* bytes of the request read so far */
    uint8_t request[FRAME_MAX];
    uint32_t answer_len;        /* a parked answer waits in the heap when > 0 */
    uint8_t answer[ANSWER_MAX];
};

struct parked {
    int64_t due_ms;
    int fd;
    uint64_t serial;
};

static struct conn *conns[MAX_CONNS];
static struct parked heap[MAX_CONNS];
static int heap_len;
static uint64_t next_serial = 1;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void heap_push(int64_t due_ms, int fd, uint64_t serial) {
    int i = heap_len++;
    while (i > 0 && heap[(i - 1) / 2].due_ms > due_ms) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i].due_ms = due_ms;
    heap[i].fd = fd;
    heap[i].serial = serial;
}

static struct parked heap_pop(void) {
    struct parked top = heap[0], last = heap[--heap_len];
    int i = 0;
    for (;;) {
        int child = 2 * i + 1;
        if (child >= heap_len) break;
        if (child + 1 < heap_len && heap[child + 1].due_ms < heap[child].due_ms) child++;
        if (heap[child].due_ms >= last.due_ms) break;
        heap[i] = heap[child];
        i = child;
    }
    if (heap_len > 0) heap[i] = last;
    return top;
}

static void close_conn(int epfd, int fd) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd]);
    conns[fd] = NULL; /* a parked deadline of this connection is dropped when it comes due */
}

/* Builds the empty answer of a whole Fetch v4 frame in c->request; returns its max wait in
 * ms, or -1 if the frame is not one this program reads. */
static int answer_fetch_v4(struct conn *c, uint32_t frame_len) {
    /* p never passes end: each read checks what is left first. */
    const uint8_t *p = c->request + 4, *end = c->request + 4 + frame_len;
#define LEFT ((size_t)(end - p))
    if (LEFT < 10) return -1;
    uint32_t correlation = get32(p + 4);
    uint16_t client_len = get16(p + 8);
    size_t header_len = 10 + (client_len == 0xffff ? 0 : client_len);
    if (LEFT < header_len + 4 + 4 + 4 + 4 + 1 + 4) return -1;
    p += header_len;
    int32_t max_wait = (int32_t)get32(p + 4);
    p += 17; /* replica, max wait, min bytes, max bytes, isolation */
    uint32_t topics = get32(p);
    p += 4;
    uint8_t *out = c->answer + 4;
    size_t room = ANSWER_MAX - 4 - 12;
    out = put32(out, correlation);
    out = put32(out, 0); /* throttle_time_ms */
    out = put32(out, topics);
    for (uint32_t t = 0; t < topics; t++) {
        if (LEFT < 2) return -1;
        size_t name_len = get16(p);
        if (LEFT < 2 + name_len + 4 || room < 2 + name_len + 4) return -1;
        memcpy(out, p, 2 + name_len);
        out += 2 + name_len;
        p += 2 + name_len;
        room -= 2 + name_len + 4;
        uint32_t partitions = get32(p);
        p += 4;
        out = put32(out, partitions);
        for (uint32_t i = 0; i < partitions; i++) {
            if (LEFT < 16 || room < 30) return -1;
            room -= 30;
            memcpy(out, p, 4); /* partition index */
            out += 4;
            p += 16;          /* index, fetch offset, partition max bytes */
            out = put16(out, 0);              /* error */
            out = put64(out, 0);              /* high watermark */
            out = put64(out, 0);              /* last stable offset */
            out = put32(out, 0);              /* aborted transactions: none */
            out = put32(out, 0xffffffffu);    /* records: null */
        }
    }
#undef LEFT
    c->answer_len = (uint32_t)(out - c->answer);
    put32(c->answer, c->answer_len - 4);
    return max_wait < 0 ? 0 : max_wait;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: longpoll_floor PORT [grid]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int grid = argc > 2 && strcmp(argv[2], "grid") == 0;
    floor_signals();
    int listener;
    /* The kernel's socket buffers, as when the floor was first measured. */
    int epfd = floor_listen("longpoll_floor", port, 0, &listener);
    printf("ready\n");
    fflush(stdout);

    struct epoll_event events[256];
    while (!stopping) {
        int timeout = -1;
        if (heap_len > 0) {
            int64_t left = heap[0].due_ms - now_ms();
            timeout = left < 0 ? 0 : (int)left;
        }
        int n = epoll_wait(epfd, events, 256, timeout);
        if (n < 0 && errno != EINTR) {
            perror("longpoll_floor: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int client;
                while ((client = floor_accept(listener, epfd, 0, MAX_CONNS)) >= 0) {
                    conns[client] = calloc(1, sizeof(struct conn));
                    if (!conns[client]) { close(client); continue; }
                    conns[client]->fd = client;
                    conns[client]->serial = next_serial++;
                }
                continue;
            }
            struct conn *c = conns[fd];
            if (!c) continue;
            ssize_t got = recv(fd, c->request + c->have, FRAME_MAX - c->have, 0);
            if (got <= 0) {
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                close_conn(epfd, fd);
                continue;
            }
            c->have += (uint32_t)got;
            if (c->have < 4) continue;
            uint32_t frame_len = get32(c->request);
            if (frame_len + 4 > FRAME_MAX || c->answer_len > 0) { close_conn(epfd, fd); continue; }
            if (c->have < frame_len + 4) continue;
            if (c->have > frame_len + 4) { close_conn(epfd, fd); continue; } /* no pipelining */
            c->have = 0;
            if (frame_len >= 8 && get16(c->request + 4) == API_VERSIONS) {
                /* Every client says ApiVersions first: answered at once, with no APIs. */
                uint8_t answer[14];
                put32(put32(put32(answer, 10), get32(c->request + 8)), 0);
                put16(answer + 12, 0);
                if (send(fd, answer, sizeof answer, 0) != (ssize_t)sizeof answer) close_conn(epfd, fd);
                continue;
            }
            int wait = frame_len >= 4 && get16(c->request + 4) == FETCH && get16(c->request + 6) == 4
                           ? answer_fetch_v4(c, frame_len) : -1;
            if (wait < 0) { close_conn(epfd, fd); continue; }
            /* Closed connections' entries stay until due: the heap may fill before the
             * table does; a poll that finds it full is dropped with its connection. */
            if (heap_len == MAX_CONNS) { close_conn(epfd, fd); continue; }
            int64_t due = now_ms() + wait;
            int64_t early_max = wait / 50 < 16 ? wait / 50 : 16, tick = 1;
            while (tick * 2 <= early_max) tick *= 2;
            if (grid && tick > 1) due -= due % tick;
            heap_push(due, fd, c->serial);
        }
        int64_t now = now_ms();
        while (heap_len > 0 && heap[0].due_ms <= now) {
            struct parked p = heap_pop();
            struct conn *c = conns[p.fd];
            if (!c || c->serial != p.serial || c->answer_len == 0) continue;
            /* A small answer into an idle socket's buffer: one send, whole, or the
             * connection is dropped (the bench's clients read every answer at once). */
            if (send(p.fd, c->answer, c->answer_len, 0) != (ssize_t)c->answer_len) {
                close_conn(epfd, p.fd);
                continue;
            }
            c->answer_len = 0;
        }
    }
    return 0;
}
