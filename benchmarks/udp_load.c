/* UDP tracker load generator (BEP 15 + BEP 41), for benchmarks/udp.py, which compiles it with
 * the machine's gcc:  gcc -O2 -o udp_load udp_load.c
 *
 *   udp_load HOST PORT PEERS_FILE MODE SECONDS INFLIGHT SOCKETS MIN_PEERS
 *
 * PEERS_FILE: 54-byte records, one per announce to send, in the order to send them:
 *   info_hash (20), peer_id (20), port (2, big-endian), left (8, big-endian), key (4).
 * MODE: "fill" sends every record once with event=started (a lost one is sent again) and stops;
 *       "run" sends them with no event, cycling through the file, for SECONDS seconds.
 * Each of SOCKETS sockets (a client with its own source port) connects once, reuses its
 * connection id for every announce, and connects again every 50 s as clients do. INFLIGHT
 * announces are kept in flight in all, each with its own transaction id.
 *
 * Every answer is checked: it must come from the socket it was sent on, carry action 1 and the
 * transaction id of an announce in flight, and hold a whole number of peers (6 bytes each; 18
 * over IPv6), at least MIN_PEERS of them. An error answer (action 3) or a malformed one is
 * counted, never retried. An announce unanswered for 1 s is counted as lost and sent again.
 * The result is one JSON line on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECORD 54
#define MAX_SOCKETS 1024
#define MAX_SLOTS 8192
#define LAT_BUCKETS 200000 /* 1 us each: up to 200 ms; slower answers land in the last */
#define TIMEOUT_NS 1000000000LL
#define RECONNECT_NS 50000000000LL

static const char URL_DATA[] = "\x02\x09/announce"; /* BEP 41, as libtorrent sends it */
#define URL_LEN 11
#define ANNOUNCE_LEN (98 + URL_LEN)

struct slot {
    int active;
    uint32_t txid;
    long long sent_ns;
    long record;
};

struct client {
    int fd;
    int connected;
    uint64_t cid;       /* network order, as received */
    uint32_t conn_txid; /* transaction id of the connect in flight */
    long long conn_sent_ns;
    long long conn_at_ns;
};

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put32(unsigned char *p, uint32_t v) { v = htonl(v); memcpy(p, &v, 4); }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return ntohl(v); }
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) { p[i] = v & 0xff; v >>= 8; }
}

static unsigned char *records;
static long nrecords;
static struct client clients[MAX_SOCKETS];
static struct slot slots[MAX_SLOTS];
static uint32_t lat[LAT_BUCKETS];
static int nclients, nslots, per_client, min_peers, peer_size, fill;
static long next_record, done_records;
static unsigned char *record_done; /* fill: answered already */
static long long answers, errors, bad, lost, stray, sent, connects, peers_total;
static char first_error[160], first_bad[160];
static uint32_t gen = 1;

static void note(char *where, const char *fmt, const char *detail) {
    if (where[0]) return;
    snprintf(where, 160, fmt, detail);
    for (char *p = where; *p; p++) /* keep the JSON line valid */
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) *p = '?';
}

static void send_connect(struct client *c) {
    unsigned char buf[16];
    put64(buf, 0x41727101980ULL);
    put32(buf + 8, 0);
    c->conn_txid = 0x80000000u | (gen++ & 0x7fffffff);
    put32(buf + 12, c->conn_txid);
    c->conn_sent_ns = now_ns();
    send(c->fd, buf, 16, 0);
    connects++;
}

static long pick_record(void) {
    if (fill) {
        while (next_record < nrecords && record_done[next_record]) next_record++;
        if (next_record >= nrecords) return -1;
        return next_record++;
    }
    long r = next_record++;
    if (next_record >= nrecords) next_record = 0;
    return r;
}

static void send_announce(int s, long r) {
    struct client *c = &clients[s / per_client];
    unsigned char buf[ANNOUNCE_LEN];
    const unsigned char *rec = records + r * RECORD;
    memcpy(buf, &c->cid, 8);
    put32(buf + 8, 1);
    uint32_t txid = ((gen++ & 0x7fff) << 16) | (uint32_t)s;
    put32(buf + 12, txid);
    memcpy(buf + 16, rec, 20);      /* info_hash */
    memcpy(buf + 36, rec + 20, 20); /* peer_id */
    uint64_t left = 0;
    for (int i = 0; i < 8; i++) left = (left << 8) | rec[42 + i];
    put64(buf + 56, 0);    /* downloaded */
    memcpy(buf + 64, rec + 42, 8); /* left */
    put64(buf + 72, 0);    /* uploaded */
    put32(buf + 80, fill ? 2 : 0); /* event: started / none */
    put32(buf + 84, 0);    /* ip */
    memcpy(buf + 88, rec + 50, 4); /* key */
    put32(buf + 92, 50);   /* num_want */
    memcpy(buf + 96, rec + 40, 2); /* port */
    memcpy(buf + 98, URL_DATA, URL_LEN);
    (void)left;
    slots[s].active = 1;
    slots[s].txid = txid;
    slots[s].record = r;
    slots[s].sent_ns = now_ns();
    send(c->fd, buf, ANNOUNCE_LEN, 0);
    sent++;
}

static void start_slots(int ci) {
    for (int k = 0; k < per_client; k++) {
        int s = ci * per_client + k;
        if (slots[s].active) continue;
        long r = pick_record();
        if (r < 0) return;
        send_announce(s, r);
    }
}

static void on_datagram(int ci, const unsigned char *d, ssize_t n, long long t) {
    struct client *c = &clients[ci];
    if (n < 8) { bad++; note(first_bad, "%s", "answer shorter than 8 bytes"); return; }
    uint32_t action = get32(d), txid = get32(d + 4);
    if (txid & 0x80000000u) {
        if (txid != c->conn_txid) { stray++; return; }
        if (action != 0 || n < 16) {
            bad++;
            note(first_bad, "%s", action == 3 ? "connect refused" : "malformed connect answer");
            return;
        }
        memcpy(&c->cid, d + 8, 8);
        c->connected = 1;
        c->conn_txid = 0;
        c->conn_at_ns = t;
        start_slots(ci);
        return;
    }
    int s = txid & 0xffff;
    if (s < ci * per_client || s >= (ci + 1) * per_client || !slots[s].active ||
        slots[s].txid != txid) {
        stray++; /* a late answer to an announce already counted as lost */
        return;
    }
    slots[s].active = 0;
    long long us = (t - slots[s].sent_ns) / 1000;
    lat[us < 0 ? 0 : us < LAT_BUCKETS ? us : LAT_BUCKETS - 1]++;
    if (action == 3) {
        errors++;
        char msg[120];
        int len = n - 8 < 119 ? (int)(n - 8) : 119;
        memcpy(msg, d + 8, len);
        msg[len] = 0;
        note(first_error, "%s", msg);
    } else if (action != 1 || n < 20 || (n - 20) % peer_size) {
        bad++;
        note(first_bad, "%s", action != 1 ? "wrong action" : "peer list not whole peers");
    } else if ((n - 20) / peer_size < min_peers) {
        bad++;
        note(first_bad, "%s", "fewer peers than MIN_PEERS");
    } else {
        answers++;
        peers_total += (n - 20) / peer_size;
        if (fill) { record_done[slots[s].record] = 1; done_records++; }
    }
    if (t - c->conn_at_ns > RECONNECT_NS && !c->conn_txid) {
        c->connected = 0;
        send_connect(c);
        return;
    }
    long r = pick_record();
    if (r >= 0) send_announce(s, r);
}

static long long percentile(long long total, double q) {
    long long want = (long long)(q * total), seen = 0;
    for (int i = 0; i < LAT_BUCKETS; i++) {
        seen += lat[i];
        if (seen > want) return i;
    }
    return LAT_BUCKETS;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s HOST PORT PEERS_FILE fill|run SECONDS INFLIGHT SOCKETS MIN_PEERS\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2];
    fill = strcmp(argv[4], "fill") == 0;
    double seconds = atof(argv[5]);
    int inflight = atoi(argv[6]);
    nclients = atoi(argv[7]);
    min_peers = atoi(argv[8]);
    if (nclients < 1 || nclients > MAX_SOCKETS || inflight < nclients || inflight > MAX_SLOTS) {
        fprintf(stderr, "need 1 <= SOCKETS <= %d and SOCKETS <= INFLIGHT <= %d\n", MAX_SOCKETS,
                MAX_SLOTS);
        return 2;
    }
    per_client = inflight / nclients;
    nslots = per_client * nclients;

    FILE *f = fopen(argv[3], "rb");
    if (!f) { perror(argv[3]); return 2; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    nrecords = size / RECORD;
    records = malloc(size);
    if (!records || fread(records, 1, size, f) != (size_t)size || nrecords == 0) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        return 2;
    }
    fclose(f);
    record_done = calloc(nrecords, 1);

    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host, port, &hints, &ai)) { fprintf(stderr, "bad address\n"); return 2; }
    peer_size = ai->ai_family == AF_INET6 ? 18 : 6;
    int ep = epoll_create1(0);
    for (int i = 0; i < nclients; i++) {
        int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int big = 1 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen)) { perror("socket"); return 2; }
        clients[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    freeaddrinfo(ai);

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    long long t0 = now_ns(), end = t0 + (long long)(seconds * 1e9), last_check = t0;
    for (int i = 0; i < nclients; i++) send_connect(&clients[i]);
    unsigned char buf[4096];
    struct epoll_event evs[64];
    for (;;) {
        long long t = now_ns();
        if (!fill && t >= end) break;
        if (fill && done_records >= nrecords) break;
        if (fill && t >= end) break; /* a fill that cannot finish in time */
        int n = epoll_wait(ep, evs, 64, 10);
        t = now_ns();
        for (int e = 0; e < n; e++) {
            int ci = evs[e].data.u32;
            for (;;) {
                ssize_t len = recv(clients[ci].fd, buf, sizeof buf, 0);
                if (len < 0) break;
                on_datagram(ci, buf, len, now_ns());
            }
        }
        if (t - last_check > 10000000LL) {
            last_check = t;
            for (int i = 0; i < nclients; i++) {
                struct client *c = &clients[i];
                if (c->conn_txid && t - c->conn_sent_ns > TIMEOUT_NS) send_connect(c);
                if (!c->connected) continue;
                for (int k = 0; k < per_client; k++) {
                    int s = i * per_client + k;
                    if (slots[s].active && t - slots[s].sent_ns > TIMEOUT_NS) {
                        lost++;
                        slots[s].active = 0;
                        long r = fill ? slots[s].record : pick_record();
                        send_announce(s, r);
                    } else if (!slots[s].active && c->connected && !c->conn_txid) {
                        long r = pick_record();
                        if (r >= 0) send_announce(s, r);
                    }
                }
            }
        }
    }
    long long t1 = now_ns();
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 ((ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec)) / 1e6;
    long long total = answers + errors + bad;
    printf("JSON {\"mode\": \"%s\", \"records\": %ld, \"sent\": %lld, \"answers\": %lld, "
           "\"errors\": %lld, \"bad\": %lld, \"lost\": %lld, \"stray\": %lld, \"connects\": %lld, "
           "\"done\": %ld, \"peers_per_answer\": %.2f, \"duration_us\": %lld, \"lat_p50_us\": %lld, "
           "\"lat_p99_us\": %lld, \"lat_p999_us\": %lld, \"load_cpu_s\": %.3f, "
           "\"first_error\": \"%s\", \"first_bad\": \"%s\"}\n",
           fill ? "fill" : "run", nrecords, sent, answers, errors, bad, lost, stray, connects,
           done_records, answers ? (double)peers_total / answers : 0.0, (t1 - t0) / 1000,
           percentile(total, 0.5), percentile(total, 0.99), percentile(total, 0.999), cpu,
           first_error, first_bad);
    return 0;
}
