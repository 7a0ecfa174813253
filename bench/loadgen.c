/* ugate bench load generator: a fast source/sink so the relay, not the client, is measured.
 *
 *   loadgen server                         listen on 127.0.0.1:0, print the port, serve forever
 *   loadgen bulk     ADDR VIA BYTES STREAMS  upload BYTES in total over STREAMS connections
 *   loadgen connrate ADDR VIA SECONDS MAX    sequential connect, 1-byte echo, close
 *   loadgen pingpong ADDR VIA SIZE COUNT     one connection, SIZE bytes there and back COUNT times
 *   loadgen hold     ADDR VIA N              open N echo-checked connections, print "ready",
 *                                            close them all when stdin ends
 *
 * ADDR is host:port to connect to. VIA is "direct", or "socks5:HOST:PORT" / "http:HOST:PORT":
 * ADDR is then a proxy, asked to connect to HOST:PORT (SOCKS5 no-auth CONNECT, or HTTP
 * CONNECT). Every result is one JSON line on stdout.
 *
 * Server protocol, by the first byte a client sends:
 *   'S' + 8-byte big-endian N, then N pattern bytes: verified; answered "OK!!" or "BAD!".
 *   'E': everything (the 'E' too) is echoed until EOF.
 * The pattern: byte i of the upload is pat[i % PAT_LEN], PAT_LEN odd, so a lost, repeated or
 * reordered chunk shows.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAT_LEN 1048573u /* prime, just under 1 MiB */
#define CHUNK (256 * 1024)

static unsigned char *pat; /* 2 * PAT_LEN bytes: any PAT_LEN-long window is contiguous */

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void fail(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(3);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void make_pattern(void) {
    pat = malloc(2 * PAT_LEN);
    if (!pat) die("malloc");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (unsigned i = 0; i < PAT_LEN; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        pat[i] = (unsigned char)(x >> 24);
    }
    memcpy(pat + PAT_LEN, pat, PAT_LEN);
}

static void raise_nofile(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int parse_hostport(const char *s, struct sockaddr_in *sa, char *host, size_t hostlen) {
    const char *c = strrchr(s, ':');
    if (!c) return -1;
    size_t n = (size_t)(c - s);
    if (n + 1 > hostlen) return -1;
    memcpy(host, s, n);
    host[n] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(c + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) return -1;
    return 0;
}

static int read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        got += (size_t)k;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
    size_t put = 0;
    while (put < n) {
        ssize_t k = write(fd, (const char *)buf + put, n - put);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        put += (size_t)k;
    }
    return 0;
}

/* ------------------------------------------------------------------------- client side */
static struct sockaddr_in g_addr;
static char g_via_kind[16] = "direct";
static char g_via_target[128];
static struct sockaddr_in g_via_sa;

static void parse_target(const char *addr, const char *via) {
    char host[64];
    if (parse_hostport(addr, &g_addr, host, sizeof host) < 0) fail("ADDR: want IPv4:port");
    if (strcmp(via, "direct") == 0) return;
    const char *c = strchr(via, ':');
    if (!c || (size_t)(c - via) >= sizeof g_via_kind) fail("VIA: direct, socks5:H:P or http:H:P");
    memcpy(g_via_kind, via, (size_t)(c - via));
    g_via_kind[c - via] = 0;
    snprintf(g_via_target, sizeof g_via_target, "%s", c + 1);
    if (parse_hostport(g_via_target, &g_via_sa, host, sizeof host) < 0)
        fail("VIA target: want IPv4:port");
    if (strcmp(g_via_kind, "socks5") && strcmp(g_via_kind, "http")) fail("VIA: unknown kind");
}

/* connect (blocking), then the proxy handshake if any; returns the fd or -1 */
static int open_conn(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    nodelay(fd);
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0) { close(fd); return -1; }
    if (strcmp(g_via_kind, "socks5") == 0) {
        unsigned char hello[3] = {5, 1, 0}, r[4], req[10], rest[300];
        if (write_full(fd, hello, 3) || read_full(fd, r, 2) || r[0] != 5 || r[1] != 0) goto bad;
        req[0] = 5; req[1] = 1; req[2] = 0; req[3] = 1;
        memcpy(req + 4, &g_via_sa.sin_addr, 4);
        memcpy(req + 8, &g_via_sa.sin_port, 2);
        if (write_full(fd, req, 10) || read_full(fd, r, 4) || r[1] != 0) goto bad;
        size_t more = r[3] == 1 ? 6 : r[3] == 4 ? 18 : 0;
        if (r[3] == 3) {
            unsigned char l;
            if (read_full(fd, &l, 1)) goto bad;
            more = (size_t)l + 2;
        }
        if (!more || read_full(fd, rest, more)) goto bad;
    } else if (strcmp(g_via_kind, "http") == 0) {
        char req[512];
        int n = snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                         g_via_target, g_via_target);
        if (write_full(fd, req, (size_t)n)) goto bad;
        char head[2048];
        size_t h = 0;
        while (h < sizeof head - 1) { /* byte by byte: nothing after the head is consumed */
            if (read_full(fd, head + h, 1)) goto bad;
            h++;
            if (h >= 4 && memcmp(head + h - 4, "\r\n\r\n", 4) == 0) break;
        }
        head[h] = 0;
        if (strncmp(head, "HTTP/1.", 7) || strncmp(head + 8, " 200", 4)) goto bad;
    }
    return fd;
bad:
    close(fd);
    errno = EPROTO;
    return -1;
}

static int open_conn_retry(void) {
    for (int i = 0; i < 50; i++) {
        int fd = open_conn();
        if (fd >= 0) return fd;
        if (errno != EADDRNOTAVAIL && errno != ECONNREFUSED && errno != EAGAIN) return -1;
        usleep(20000);
    }
    return -1;
}

struct upload {
    int fd;
    uint64_t total, sent;
    unsigned char hdr[9];
    int hdr_sent, reply_got, done;
    char reply[4];
};

static int cmd_bulk(uint64_t bytes, int streams) {
    struct upload *u = calloc((size_t)streams, sizeof *u);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!u || ep < 0) die("alloc");
    for (int i = 0; i < streams; i++) {
        u[i].fd = open_conn_retry();
        if (u[i].fd < 0) die("connect");
        u[i].total = bytes / (uint64_t)streams + (i == 0 ? bytes % (uint64_t)streams : 0);
        u[i].hdr[0] = 'S';
        for (int k = 0; k < 8; k++) u[i].hdr[1 + k] = (unsigned char)(u[i].total >> (56 - 8 * k));
        set_nonblock(u[i].fd);
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, u[i].fd, &ev) < 0) die("epoll_ctl");
    }
    double t0 = now();
    int left = streams, bad = 0;
    struct epoll_event evs[256];
    while (left > 0) {
        int n = epoll_wait(ep, evs, 256, 30000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("bulk: no progress for 30 s");
        for (int e = 0; e < n; e++) {
            struct upload *s = &u[evs[e].data.u32];
            if (s->done) continue;
            if (s->hdr_sent < 9) {
                ssize_t k = write(s->fd, s->hdr + s->hdr_sent, (size_t)(9 - s->hdr_sent));
                if (k > 0) s->hdr_sent += (int)k;
                else if (k < 0 && errno != EAGAIN) die("write header");
            }
            while (s->hdr_sent == 9 && s->sent < s->total) {
                uint64_t want = s->total - s->sent;
                if (want > CHUNK) want = CHUNK;
                ssize_t k = write(s->fd, pat + s->sent % PAT_LEN, (size_t)want);
                if (k > 0) { s->sent += (uint64_t)k; continue; }
                if (k < 0 && errno == EAGAIN) break;
                die("write");
            }
            if (s->sent == s->total && s->hdr_sent == 9) {
                ssize_t k = read(s->fd, s->reply + s->reply_got, (size_t)(4 - s->reply_got));
                if (k > 0) s->reply_got += (int)k;
                else if (k == 0) fail("bulk: connection closed before the server's verdict");
                else if (errno != EAGAIN) die("read verdict");
                if (s->reply_got == 4) {
                    if (memcmp(s->reply, "OK!!", 4)) bad++;
                    s->done = 1;
                    left--;
                    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                } else {
                    struct epoll_event ev = {.events = EPOLLIN, .data = evs[e].data};
                    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                }
            }
        }
    }
    double dt = now() - t0;
    for (int i = 0; i < streams; i++) close(u[i].fd);
    printf("{\"bytes\": %llu, \"seconds\": %.6f, \"streams\": %d, \"verified\": %s}\n",
           (unsigned long long)bytes, dt, streams, bad ? "false" : "true");
    return bad ? 4 : 0;
}

static int cmd_connrate(double seconds, long max) {
    double t0 = now(), t = t0;
    long n = 0, errors = 0;
    while (n < max && (t = now()) - t0 < seconds) {
        int fd = open_conn();
        char c = 'E';
        if (fd < 0 || write_full(fd, &c, 1) || read_full(fd, &c, 1) || c != 'E') {
            errors++;
            if (fd >= 0) close(fd);
            if (errors > 100) fail("connrate: more than 100 failed connections");
            continue;
        }
        close(fd);
        n++;
    }
    double dt = now() - t0;
    printf("{\"connections\": %ld, \"seconds\": %.6f, \"per_second\": %.1f, \"errors\": %ld}\n",
           n, dt, n / dt, errors);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmd_pingpong(size_t size, long count) {
    int fd = open_conn_retry();
    char c = 'E';
    if (fd < 0 || write_full(fd, &c, 1) || read_full(fd, &c, 1)) die("pingpong connect");
    unsigned char *in = malloc(size);
    long warm = count / 10 + 10;
    double *lat = malloc(sizeof(double) * (size_t)count);
    if (!in || !lat) die("malloc");
    for (long i = 0; i < warm + count; i++) {
        const unsigned char *out = pat + (size_t)i * 7919 % PAT_LEN;
        double t0 = now();
        if (write_full(fd, out, size) || read_full(fd, in, size)) die("pingpong");
        double dt = now() - t0;
        if (memcmp(in, out, size)) fail("pingpong: echo differs");
        if (i >= warm) lat[i - warm] = dt;
    }
    close(fd);
    qsort(lat, (size_t)count, sizeof(double), cmp_double);
    printf("{\"size\": %zu, \"count\": %ld, \"p50_us\": %.2f, \"p99_us\": %.2f}\n", size, count,
           lat[count / 2] * 1e6, lat[(size_t)(count * 0.99)] * 1e6);
    return 0;
}

static int cmd_hold(long n) {
    raise_nofile();
    int *fds = malloc(sizeof(int) * (size_t)n);
    if (!fds) die("malloc");
    double t0 = now();
    for (long i = 0; i < n; i++) {
        char c = 'E';
        fds[i] = open_conn_retry();
        if (fds[i] < 0 || write_full(fds[i], &c, 1) || read_full(fds[i], &c, 1) || c != 'E') {
            fprintf(stderr, "loadgen: hold: connection %ld of %ld failed: %s\n", i, n,
                    strerror(errno));
            return 5;
        }
    }
    printf("{\"ready\": %ld, \"seconds\": %.3f}\n", n, now() - t0);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    /* every connection must still be alive: one more echo each */
    long dead = 0;
    for (long i = 0; i < n; i++) {
        char c = 'E';
        if (write_full(fds[i], &c, 1) || read_full(fds[i], &c, 1)) dead++;
        close(fds[i]);
    }
    printf("{\"closed\": %ld, \"dead\": %ld}\n", n, dead);
    return dead ? 6 : 0;
}

/* ------------------------------------------------------------------------- server side */
struct conn {
    int fd;
    char mode;          /* 0 until the first byte, then 'S' or 'E' */
    unsigned char hdr[8];
    int hdr_got;
    uint64_t total, got;
    int bad, verdict;
    unsigned char *pend; /* echo bytes not yet written */
    size_t pend_len, pend_off;
};

static unsigned char rbuf[CHUNK];

static void srv_close(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pend);
    free(c);
}

static void srv_events(int ep, struct conn *c, uint32_t events) {
    if (c->pend && (events & EPOLLOUT)) {
        ssize_t k = write(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off);
        if (k < 0 && errno != EAGAIN) { srv_close(ep, c); return; }
        if (k > 0) c->pend_off += (size_t)k;
        if (c->pend_off == c->pend_len) {
            free(c->pend);
            c->pend = NULL;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
        return;
    }
    if (c->pend) return;
    for (int round = 0; round < 16; round++) {
        ssize_t n = read(c->fd, rbuf, sizeof rbuf);
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) { srv_close(ep, c); return; }
        size_t off = 0;
        if (!c->mode) {
            c->mode = (char)rbuf[0];
            off = 1; /* the command byte (echoed too in 'E' mode) */
        }
        if (c->mode == 'E') {
            ssize_t k = write(c->fd, rbuf, (size_t)n);
            if (k < 0 && errno != EAGAIN) { srv_close(ep, c); return; }
            if (k < 0) k = 0;
            if (k < n) {
                c->pend_len = (size_t)(n - k);
                c->pend_off = 0;
                c->pend = malloc(c->pend_len);
                memcpy(c->pend, rbuf + k, c->pend_len);
                struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                return;
            }
            continue;
        }
        if (c->mode != 'S') { srv_close(ep, c); return; }
        if (c->hdr_got < 8) {
            while (c->hdr_got < 8 && off < (size_t)n) c->hdr[c->hdr_got++] = rbuf[off++];
            if (c->hdr_got < 8) continue;
            for (int k = 0; k < 8; k++) c->total = c->total << 8 | c->hdr[k];
        }
        if (c->verdict) continue; /* after the verdict: wait for the client to close */
        size_t m = (size_t)n - off;
        if (c->got + m > c->total) { c->bad = 1; m = (size_t)(c->total - c->got); }
        if (m && memcmp(rbuf + off, pat + c->got % PAT_LEN, m)) c->bad = 1;
        c->got += m;
        if (c->got == c->total) {
            write_full(c->fd, c->bad ? "BAD!" : "OK!!", 4);
            c->verdict = 1;
        }
    }
}

static int cmd_server(void) {
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4096) < 0) die("listen");
    socklen_t sl = sizeof sa;
    getsockname(ls, (struct sockaddr *)&sa, &sl);
    printf("%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    set_nonblock(ls);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    nodelay(fd);
                    struct conn *c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            srv_events(ep, evs[i].data.ptr, evs[i].events);
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    make_pattern();
    if (argc >= 2 && strcmp(argv[1], "server") == 0) return cmd_server();
    if (argc < 4) {
        fprintf(stderr, "usage: loadgen server | bulk|connrate|pingpong|hold ADDR VIA ...\n");
        return 2;
    }
    parse_target(argv[2], argv[3]);
    if (strcmp(argv[1], "bulk") == 0 && argc == 6)
        return cmd_bulk(strtoull(argv[4], NULL, 10), atoi(argv[5]));
    if (strcmp(argv[1], "connrate") == 0 && argc == 6)
        return cmd_connrate(atof(argv[4]), atol(argv[5]));
    if (strcmp(argv[1], "pingpong") == 0 && argc == 6)
        return cmd_pingpong((size_t)atol(argv[4]), atol(argv[5]));
    if (strcmp(argv[1], "hold") == 0 && argc == 5) return cmd_hold(atol(argv[4]));
    fprintf(stderr, "loadgen: bad arguments\n");
    return 2;
}
