/*
 * What the bench's floor programs (longpoll_floor.c, produce_floor.c) share: Kafka's
 * big-endian integers, a stop flag for SIGTERM and SIGINT, and a loopback listener under
 * one epoll loop. Each program is built alone by gcc; this header is included, not linked,
 * after `#define _GNU_SOURCE` (for accept4).
 */
#ifndef FLOOR_H
#define FLOOR_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static inline uint32_t get32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]; }
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint8_t *put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; return p + 4; }
static inline uint8_t *put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; return p + 2; }
static inline uint8_t *put64(uint8_t *p, uint64_t v) { p = put32(p, v >> 32); return put32(p, (uint32_t)v); }

static volatile sig_atomic_t stopping;

static void floor_on_stop(int sig) { (void)sig; stopping = 1; }

/* Sets `stopping` on SIGTERM or SIGINT (an epoll_wait then returns EINTR); a send to a
 * closed peer fails instead of killing the program. */
static inline void floor_signals(void) {
    signal(SIGTERM, floor_on_stop);
    signal(SIGINT, floor_on_stop);
    signal(SIGPIPE, SIG_IGN);
}

/* A nonblocking listener on 127.0.0.1:`port` (backlog 4096), put in *listener, watched by
 * the epoll descriptor returned. `receive_buffer_bytes` > 0 sets SO_RCVBUF before
 * listening, which accepted sockets inherit. Exits the program if it cannot listen. */
static inline int floor_listen(const char *name, int port, int receive_buffer_bytes,
                               int *listener) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (receive_buffer_bytes > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes, sizeof receive_buffer_bytes);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 4096)) {
        fprintf(stderr, "%s: ", name);
        perror("listen");
        exit(1);
    }
    int epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    *listener = fd;
    return epfd;
}

/* The next pending connection below `max_fd`, nonblocking, without Nagle, watched for input
 * by `epfd`; -1 when none is pending or accept fails. `send_buffer_bytes` > 0 also sets SO_KEEPALIVE and
 * SO_SNDBUF. A descriptor at or past `max_fd` is closed and the next one taken. */
static inline int floor_accept(int listener, int epfd, int send_buffer_bytes, int max_fd) {
    int client, one = 1;
    while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
        if (client >= max_fd) {
            close(client);
            continue;
        }
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (send_buffer_bytes > 0) {
            setsockopt(client, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
            setsockopt(client, SOL_SOCKET, SO_SNDBUF, &send_buffer_bytes, sizeof send_buffer_bytes);
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = client};
        epoll_ctl(epfd, EPOLL_CTL_ADD, client, &ev);
        return client;
    }
    return -1;
}

#endif
