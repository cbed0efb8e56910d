/*
 * wsgen: load generator for Pusher-protocol (v7) WebSocket servers.
 *
 * One thread, epoll (level-triggered), raw non-blocking sockets, one shared read buffer,
 * one CLOCK_MONOTONIC timestamp per read() (not per message), a minimal WebSocket client
 * (handshake, masked client frames with a zero mask key, unmasked server frames) and a
 * minimal HTTP/1.1 keep-alive client that signs Pusher HTTP API requests with libcrypto.
 *
 * Modes
 *   pub       N subscribers on one public channel + C keep-alive HTTP publishers (bounded
 *             in-flight: one request per connection; bounded undelivered backlog; fixed rate
 *             or as fast as accepted). Fanout, fixed-rate latency and http scenarios.
 *   idle      N subscribers opened at R/s over several source addresses, on one channel or
 *             spread over --channels K (socket i joins "<channel>-<i mod K>"); prints a READY
 *             line when all are subscribed, then waits for one event on every socket.
 *   pairs     P pairs of sockets on private channels relaying client events (window W each).
 *   presence  W watchers + C churners on one presence channel; churners leave and re-join.
 *   blast     a trivial WebSocket server that floods subscribers with small event frames,
 *             used to measure the generator's own receive capacity (self-check).
 *
 * Latency: every event carries "@ts<CLOCK_MONOTONIC ns>@" in its data; the receiver finds it
 * with memmem and subtracts it from the timestamp of the read() that brought the frame.
 * Output: one JSON object on stdout at the end (and a "READY {...}" line in idle mode).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define RBUF_SIZE (1 << 20)
static char *rbuf;

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---------------- log-linear latency histogram in microseconds (<1% error) ---------------- */
#define H_SUB 64
#define H_BUCKETS (128 + 48 * H_SUB)
typedef struct {
    uint64_t b[H_BUCKETS];
    uint64_t n, max, sum;
} hist;

static int h_index(uint64_t v) {
    if (v < 128) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    uint64_t top = v >> shift; /* 64..127 */
    int i = 128 + (shift - 1) * H_SUB + (int)(top - 64);
    return i < H_BUCKETS ? i : H_BUCKETS - 1;
}
static uint64_t h_value(int i) {
    if (i < 128) return (uint64_t)i;
    int shift = (i - 128) / H_SUB + 1;
    uint64_t top = (uint64_t)((i - 128) % H_SUB + 64);
    return (top << shift) + ((1ULL << shift) >> 1);
}
static inline void h_add(hist *h, int64_t ns) {
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    h->b[h_index(us)]++;
    h->n++;
    h->sum += us;
    if (us > h->max) h->max = us;
}
static double h_pct(const hist *h, double p) {
    if (!h->n) return -1;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->n);
    if (want >= h->n) want = h->n - 1;
    uint64_t acc = 0;
    for (int i = 0; i < H_BUCKETS; i++) {
        acc += h->b[i];
        if (acc > want) {
            uint64_t v = h_value(i);
            return (double)(v > h->max ? h->max : v) / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}
/* JSON fragment: "name":{"n":..,"p50_ms":..,...} */
static int o_dump, o_blast_frames;
static void h_json(FILE *f, const char *name, const hist *h) {
    if (o_dump) { /* sparse buckets [[upper_us, count], ...] so several processes can be merged */
        fprintf(f, "\"%s_buckets\":[", name);
        int first = 1;
        for (int i = 0; i < H_BUCKETS; i++)
            if (h->b[i]) { fprintf(f, "%s[%llu,%llu]", first ? "" : ",", (unsigned long long)h_value(i), (unsigned long long)h->b[i]); first = 0; }
        fputs("],", f);
    }
    fprintf(f, "\"%s\":{\"n\":%llu,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"mean_ms\":%.3f}",
            name, (unsigned long long)h->n, h_pct(h, 50), h_pct(h, 90), h_pct(h, 99),
            h->n ? (double)h->max / 1000.0 : -1.0, h->n ? (double)h->sum / (double)h->n / 1000.0 : -1.0);
}

/* ---------------- options ---------------- */
static const char *o_mode = "pub", *o_host = "127.0.0.1", *o_key = "app-key", *o_secret = "app-secret",
                  *o_app = "app-id", *o_channel = "bench", *o_src = "";
static int o_port = 6001, o_subs = 0, o_pubconns = 0, o_backlog = 32, o_pairs = 200, o_window = 4,
           o_watchers = 20, o_churners = 50, o_expect = 1, o_payload = 0, o_channels = 1;
static double o_rate = 0, o_warmup = 2, o_duration = 10, o_drain = 5, o_conn_rate = 0, o_setup_timeout = 60,
              o_wait = 30;

/* ---------------- connections ---------------- */
enum { K_WS = 1, K_HTTP = 2, K_SRV = 3 };
enum { S_CONNECTING = 1, S_HANDSHAKE, S_UPGRADED, S_OPEN, S_SUBSCRIBING, S_SUBSCRIBED, S_CLOSED };
/* S_UPGRADED: 101 received, connection_established not yet; S_OPEN: established, not subscribed */
enum { R_SUB = 0, R_WATCHER, R_CHURNER, R_PAIR };

typedef struct conn {
    int fd;
    uint8_t kind, state, role, want_out, busy;
    int idx;
    char *in;
    uint32_t in_len, in_cap;
    char *out;
    uint32_t out_len, out_cap, out_off;
    int64_t t_start, t_req;
    uint32_t recv;
    uint32_t seq;
    char sid[40];
} conn;

static int ep;
static conn **idle_pub;
static int n_idle_pub;
static conn *conns;
static int nconns, maxconns;
static struct sockaddr_in dst;
static struct in_addr srcs[64];
static int nsrc;

/* counters */
static uint64_t c_deliv, c_deliv_meas, c_ok, c_ok_meas, c_http_err, c_sent_pub, c_conn_err, c_closed,
    c_ws_err, c_relayed, c_relayed_meas, c_joins, c_joins_meas, c_madd, c_madd_meas, c_mrem, c_pings,
    c_pub_reconnect, c_late, c_sub_ok, c_est, c_frames;
static hist h_deliv, h_http, h_hs, h_sub, h_join, h_madd;
static int phase; /* 0 setup 1 warmup 2 measure 3 drain 4 done */
enum { P_SETUP = 0, P_WARMUP, P_MEASURE, P_DRAIN, P_DONE };
static int64_t t_phase_start, t_meas_start, t_meas_end, t_setup_start, t_all_ready;
static char first_err[512];

static void note_err(const char *p, size_t n) {
    if (first_err[0]) return;
    if (n > sizeof first_err - 1) n = sizeof first_err - 1;
    for (size_t i = 0; i < n; i++) first_err[i] = (p[i] == '"' || p[i] == '\\' || (unsigned char)p[i] < 32) ? '\'' : p[i];
    first_err[n] = 0;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static void buf_append(char **b, uint32_t *len, uint32_t *cap, const char *d, size_t n) {
    if (*len + n > *cap) {
        uint32_t nc = *cap ? *cap : 256;
        while (nc < *len + n) nc *= 2;
        *b = realloc(*b, nc);
        if (!*b) die("oom");
        *cap = nc;
    }
    memcpy(*b + *len, d, n);
    *len += (uint32_t)n;
}

static void ep_mod(conn *c, int want_out) {
    if (c->want_out == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = (uint8_t)want_out;
}

static void conn_close(conn *c) {
    if (c->state == S_CLOSED) return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = S_CLOSED;
    c->in_len = c->out_len = c->out_off = 0;
    if (c->kind == K_WS) c_closed++;
}

static void conn_send(conn *c, const char *d, size_t n) {
    if (c->state == S_CLOSED) return;
    if (c->out_len == 0 && c->state != S_CONNECTING) {
        ssize_t w = write(c->fd, d, n);
        if (w == (ssize_t)n) return;
        if (w < 0) {
            if (errno != EAGAIN) { conn_close(c); return; }
            w = 0;
        }
        d += w;
        n -= (size_t)w;
    }
    buf_append(&c->out, &c->out_len, &c->out_cap, d, n);
    ep_mod(c, 1);
}

static void conn_flush(conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EAGAIN) return;
            conn_close(c);
            return;
        }
        c->out_off += (uint32_t)w;
    }
    c->out_len = c->out_off = 0;
    ep_mod(c, 0);
}

/* client WebSocket text frame with a zero mask key (payload unchanged) */
static void ws_send(conn *c, const char *p, size_t n) {
    char hdr[14];
    size_t h = 0;
    hdr[h++] = (char)0x81;
    if (n < 126) hdr[h++] = (char)(0x80 | n);
    else if (n < 65536) { hdr[h++] = (char)(0x80 | 126); hdr[h++] = (char)(n >> 8); hdr[h++] = (char)n; }
    else { hdr[h++] = (char)(0x80 | 127); for (int i = 7; i >= 0; i--) hdr[h++] = (char)((uint64_t)n >> (8 * i)); }
    memset(hdr + h, 0, 4);
    h += 4;
    char tmp[4096];
    if (h + n <= sizeof tmp) {
        memcpy(tmp, hdr, h);
        memcpy(tmp + h, p, n);
        conn_send(c, tmp, h + n);
    } else {
        conn_send(c, hdr, h);
        conn_send(c, p, n);
    }
}
static void ws_send_ctl(conn *c, int opcode, const char *p, size_t n) {
    char tmp[140];
    if (n > 125) n = 125;
    tmp[0] = (char)(0x80 | opcode);
    tmp[1] = (char)(0x80 | n);
    memset(tmp + 2, 0, 4);
    memcpy(tmp + 6, p, n);
    conn_send(c, tmp, 6 + n);
}

static void hexs(const unsigned char *d, size_t n, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) { out[2 * i] = hx[d[i] >> 4]; out[2 * i + 1] = hx[d[i] & 15]; }
    out[2 * n] = 0;
}
static void hmac_hex(const char *msg, size_t n, char *out65) {
    unsigned char md[32];
    unsigned int ml = 32;
    HMAC(EVP_sha256(), o_secret, (int)strlen(o_secret), (const unsigned char *)msg, n, md, &ml);
    hexs(md, 32, out65);
}
static void md5_hex(const char *msg, size_t n, char *out33) {
    unsigned char md[16];
    unsigned int ml = 16;
    EVP_Digest(msg, n, md, &ml, EVP_md5(), NULL);
    hexs(md, 16, out33);
}

/* ---------------- connection setup ---------------- */
static conn *conn_new(int kind, int role) {
    if (nconns >= maxconns) die("too many conns");
    conn *c = &conns[nconns];
    c->idx = nconns++;
    c->kind = (uint8_t)kind;
    c->role = (uint8_t)role;
    c->state = S_CLOSED;
    c->fd = -1;
    return c;
}

static int src_rr;
static void conn_open(conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) { c_conn_err++; note_err("socket() failed", 15); return; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (nsrc) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr = srcs[src_rr++ % nsrc]};
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { c_conn_err++; close(fd); note_err("bind failed", 11); return; }
    }
    c->fd = fd;
    c->t_start = mono_ns();
    c->in_len = c->out_len = c->out_off = 0;
    c->want_out = 1;
    c->busy = 0;
    int r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    if (r < 0 && errno != EINPROGRESS) { c_conn_err++; close(fd); c->fd = -1; note_err("connect failed", 14); return; }
    c->state = S_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void on_connected(conn *c) {
    char req[512];
    if (c->kind == K_WS) {
        int n = snprintf(req, sizeof req,
                         "GET /app/%s?protocol=7&client=js&version=8.4.0&flash=false HTTP/1.1\r\n"
                         "Host: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                         "Origin: http://localhost\r\n\r\n",
                         o_key, o_host, o_port);
        c->state = S_HANDSHAKE;
        conn_send(c, req, (size_t)n);
    } else {
        c->state = S_OPEN;
        if (phase != P_SETUP) idle_pub[n_idle_pub++] = c;
    }
}

/* ---------------- Pusher messages ---------------- */
static void subscribe_public(conn *c, const char *channel) {
    char m[256];
    int n = snprintf(m, sizeof m, "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\",\"auth\":\"\"}}", channel);
    c->state = S_SUBSCRIBING;
    c->t_req = mono_ns();
    ws_send(c, m, (size_t)n);
}
static void subscribe_private(conn *c, const char *channel) {
    char s[256], sig[65], m[512];
    int n = snprintf(s, sizeof s, "%s:%s", c->sid, channel);
    hmac_hex(s, (size_t)n, sig);
    n = snprintf(m, sizeof m, "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\",\"auth\":\"%s:%s\"}}", channel, o_key, sig);
    c->state = S_SUBSCRIBING;
    c->t_req = mono_ns();
    ws_send(c, m, (size_t)n);
}
static const char *presence_channel = "presence-bench";
static void subscribe_presence(conn *c, const char *uid, int64_t ts) {
    char cd[256], cde[320], s[512], sig[65], m[1024];
    int n = ts ? snprintf(cd, sizeof cd, "{\"user_id\":\"%s\",\"user_info\":{\"t\":\"@ts%lld@\"}}", uid, (long long)ts)
               : snprintf(cd, sizeof cd, "{\"user_id\":\"%s\",\"user_info\":{}}", uid);
    int k = 0;
    for (int i = 0; i < n; i++) { if (cd[i] == '"') cde[k++] = '\\'; cde[k++] = cd[i]; }
    cde[k] = 0;
    n = snprintf(s, sizeof s, "%s:%s:%s", c->sid, presence_channel, cd);
    hmac_hex(s, (size_t)n, sig);
    n = snprintf(m, sizeof m,
                 "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\",\"auth\":\"%s:%s\",\"channel_data\":\"%s\"}}",
                 presence_channel, o_key, sig, cde);
    c->state = S_SUBSCRIBING;
    c->t_req = mono_ns();
    ws_send(c, m, (size_t)n);
}
static void unsubscribe(conn *c, const char *channel) {
    char m[256];
    int n = snprintf(m, sizeof m, "{\"event\":\"pusher:unsubscribe\",\"data\":{\"channel\":\"%s\"}}", channel);
    ws_send(c, m, (size_t)n);
    c->state = S_OPEN;
}
static char padding[16384];
static void send_client_event(conn *c) {
    char m[512 + sizeof padding];
    int pairidx = c->idx / 2;
    int n = snprintf(m, sizeof m, "{\"event\":\"client-x\",\"channel\":\"private-bench-%d\",\"data\":{\"t\":\"@ts%lld@\",\"p\":\"%s\"}}",
                     pairidx, (long long)mono_ns(), padding);
    ws_send(c, m, (size_t)n);
}

/* ---------------- publisher ---------------- */
static int64_t next_send;
static uint64_t pub_seq;

static void pub_send(conn *c, int64_t now) {
    char body[256 + sizeof padding], q[512], sig[65], md5[33], req[1024];
    int bn = snprintf(body, sizeof body, "{\"name\":\"ev\",\"channel\":\"%s\",\"data\":\"@ts%lld@%s\"}", o_channel, (long long)now, padding);
    md5_hex(body, (size_t)bn, md5);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    snprintf(q, sizeof q, "auth_key=%s&auth_timestamp=%lld&auth_version=1.0&body_md5=%s", o_key, (long long)rt.tv_sec, md5);
    char tosign[700];
    int sn = snprintf(tosign, sizeof tosign, "POST\n/apps/%s/events\n%s", o_app, q);
    hmac_hex(tosign, (size_t)sn, sig);
    int rn = snprintf(req, sizeof req,
                      "POST /apps/%s/events?%s&auth_signature=%s HTTP/1.1\r\nHost: %s:%d\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
                      o_app, q, sig, o_host, o_port, bn);
    c->busy = 1;
    c->t_req = now;
    pub_seq++;
    c_sent_pub++;
    if (rn + bn < (int)sizeof req) {
        memcpy(req + rn, body, (size_t)bn);
        conn_send(c, req, (size_t)(rn + bn));
    } else {
        conn_send(c, req, (size_t)rn);
        conn_send(c, body, (size_t)bn);
    }
}

static int backlog_ok(void) {
    if (o_subs == 0) return 1;
    /* events sent but not yet delivered to every subscriber, in events */
    uint64_t expected = c_sent_pub * (uint64_t)o_subs;
    return expected <= c_deliv + (uint64_t)o_backlog * (uint64_t)o_subs;
}

static void pub_pump(int64_t now) {
    if (phase != P_WARMUP && phase != P_MEASURE) return;
    if (o_rate > 0) {
        int64_t step = (int64_t)(1e9 / o_rate);
        while (now >= next_send) {
            if (!n_idle_pub || !backlog_ok()) {
                /* cannot keep the schedule: skip the slot, count it */
                if (now - next_send > 100000000LL) { c_late++; next_send += step; continue; }
                break;
            }
            pub_send(idle_pub[--n_idle_pub], now);
            next_send += step;
        }
    } else {
        while (n_idle_pub && backlog_ok()) pub_send(idle_pub[--n_idle_pub], now);
    }
}

/* ---------------- frame handling ---------------- */
static inline int64_t find_ts(const char *p, size_t n) {
    const char *m = memmem(p, n, "@ts", 3);
    if (!m) return -1;
    m += 3;
    const char *e = p + n;
    int64_t v = 0;
    while (m < e && *m >= '0' && *m <= '9') v = v * 10 + (*m++ - '0');
    return v;
}

static void start_traffic(conn *c);

static void on_event_frame(conn *c, const char *p, size_t n, int64_t now) {
    c_frames++;
    const char *ev = NULL;
    size_t lim = n < 96 ? n : 96;
    const char *k = memmem(p, lim, "\"event\":\"", 9);
    if (!k) k = memmem(p, n, "\"event\":\"", 9);
    if (!k) { c_ws_err++; note_err(p, n); return; }
    ev = k + 9;
    size_t rem = (size_t)(p + n - ev);
#define EVIS(lit) (rem > sizeof(lit) - 1 && memcmp(ev, lit "\"", sizeof(lit)) == 0)
    if (EVIS("ev")) {
        int64_t ts = find_ts(ev, rem);
        c->recv++;
        c_deliv++;
        if (phase == P_MEASURE) { c_deliv_meas++; if (ts > 0) h_add(&h_deliv, now - ts); }
        else if (phase == P_SETUP && ts > 0) h_add(&h_deliv, now - ts); /* idle mode: the one trigger */
        return;
    }
    if (rem > 7 && memcmp(ev, "client-", 7) == 0) {
        int64_t ts = find_ts(ev, rem);
        c_relayed++;
        if (phase == P_MEASURE) { c_relayed_meas++; if (ts > 0) h_add(&h_deliv, now - ts); }
        if (phase == P_WARMUP || phase == P_MEASURE) send_client_event(c);
        return;
    }
    if (EVIS("pusher_internal:member_added")) {
        int64_t ts = find_ts(ev, rem);
        c_madd++;
        if (phase == P_MEASURE && c->role == R_WATCHER) { c_madd_meas++; if (ts > 0) h_add(&h_madd, now - ts); }
        return;
    }
    if (EVIS("pusher_internal:member_removed")) { c_mrem++; return; }
    if (EVIS("pusher_internal:subscription_succeeded")) {
        c->state = S_SUBSCRIBED;
        c_sub_ok++;
        if (c->role == R_CHURNER && phase != P_SETUP) {
            c_joins++;
            if (phase == P_MEASURE) { c_joins_meas++; h_add(&h_join, now - c->t_req); }
            if (phase == P_WARMUP || phase == P_MEASURE) start_traffic(c);
        } else {
            h_add(&h_sub, now - c->t_req);
        }
        return;
    }
    if (EVIS("pusher:connection_established")) {
        const char *s = memmem(ev, rem, "socket_id", 9);
        size_t i = 0;
        if (s) {
            s += 9;
            while (s < p + n && !(*s >= '0' && *s <= '9')) s++;
            while (s < p + n && i < sizeof c->sid - 1 && ((*s >= '0' && *s <= '9') || *s == '.')) c->sid[i++] = *s++;
        }
        c->sid[i] = 0;
        c->state = S_OPEN;
        c_est++;
        h_add(&h_hs, now - c->t_start);
        if (c->role == R_SUB && o_channels > 1) {
            char ch[96];
            snprintf(ch, sizeof ch, "%s-%d", o_channel, c->idx % o_channels);
            subscribe_public(c, ch);
        } else if (c->role == R_SUB) subscribe_public(c, o_channel);
        else if (c->role == R_PAIR) {
            char ch[64];
            snprintf(ch, sizeof ch, "private-bench-%d", c->idx / 2);
            subscribe_private(c, ch);
        } else if (c->role == R_WATCHER) {
            char uid[32];
            snprintf(uid, sizeof uid, "w%d", c->idx);
            subscribe_presence(c, uid, 0);
        }
        return;
    }
    if (EVIS("pusher:ping")) {
        c_pings++;
        static const char pong[] = "{\"event\":\"pusher:pong\",\"data\":{}}";
        ws_send(c, pong, sizeof pong - 1);
        return;
    }
    if (EVIS("pusher:error") || EVIS("pusher:subscription_error") || EVIS("pusher_internal:subscription_error")) {
        c_ws_err++;
        note_err(p, n);
        return;
    }
    /* anything else (pusher:pong, cache miss, ...) is ignored */
}

static void ws_parse(conn *c, char *p, size_t len, int64_t now) {
    size_t off = 0;
    if (c->state == S_HANDSHAKE) {
        char *e = memmem(p, len, "\r\n\r\n", 4);
        if (!e) { c->in_len = 0; buf_append(&c->in, &c->in_len, &c->in_cap, p, len); return; }
        if (len < 12 || memcmp(p + 9, "101", 3) != 0) {
            note_err(p, (size_t)(e - p));
            c_conn_err++;
            conn_close(c);
            return;
        }
        c->state = c->kind == K_SRV ? S_OPEN : S_UPGRADED;
        off = (size_t)(e - p) + 4;
    }
    while (len - off >= 2) {
        unsigned char b0 = (unsigned char)p[off], b1 = (unsigned char)p[off + 1];
        size_t h = 2;
        uint64_t pl = b1 & 0x7f;
        if (pl == 126) {
            if (len - off < 4) break;
            pl = ((uint64_t)(unsigned char)p[off + 2] << 8) | (unsigned char)p[off + 3];
            h = 4;
        } else if (pl == 127) {
            if (len - off < 10) break;
            pl = 0;
            for (int i = 0; i < 8; i++) pl = (pl << 8) | (unsigned char)p[off + 2 + i];
            h = 10;
        }
        if (b1 & 0x80) h += 4; /* server frames should not be masked; tolerate */
        if (len - off < h + pl) break;
        char *payload = p + off + h;
        int op = b0 & 0x0f;
        if (op == 1 || op == 0 || op == 2) {
            if (c->kind == K_SRV) { /* blast server: any text from a client is a subscribe */
                static const char ok[] = "{\"event\":\"pusher_internal:subscription_succeeded\",\"channel\":\"bench\",\"data\":\"{}\"}";
                char f[128];
                f[0] = (char)0x81;
                f[1] = (char)(sizeof ok - 1);
                memcpy(f + 2, ok, sizeof ok - 1);
                conn_send(c, f, sizeof ok + 1);
                c->state = S_SUBSCRIBED;
                ep_mod(c, 1);
            } else {
                on_event_frame(c, payload, (size_t)pl, now);
            }
        } else if (op == 9) {
            ws_send_ctl(c, 0xA, payload, (size_t)pl);
        } else if (op == 8) {
            note_err(payload, (size_t)pl);
            conn_close(c);
            return;
        }
        off += h + pl;
        if (c->state == S_CLOSED) return;
    }
    c->in_len = 0;
    if (off < len) buf_append(&c->in, &c->in_len, &c->in_cap, p + off, len - off);
}

static void http_parse(conn *c, char *p, size_t len, int64_t now) {
    size_t off = 0;
    for (;;) {
        char *e = memmem(p + off, len - off, "\r\n\r\n", 4);
        if (!e) break;
        size_t hl = (size_t)(e - (p + off)) + 4;
        long cl = -1;
        int chunked = 0, cclose = 0;
        for (char *q = p + off; q < e; q++) {
            if (*q != '\n') continue;
            if (strncasecmp(q + 1, "content-length:", 15) == 0) cl = strtol(q + 16, NULL, 10);
            else if (strncasecmp(q + 1, "connection:", 11) == 0 && strncasecmp(q + 12 + (q[12] == ' '), "close", 5) == 0) cclose = 1;
            else if (strncasecmp(q + 1, "transfer-encoding:", 18) == 0 && memmem(q, (size_t)(e - q), "chunked", 7)) chunked = 1;
        }
        size_t total;
        if (chunked) {
            char *z = memmem(e + 4, len - off - hl, "0\r\n\r\n", 5);
            if (!z) break;
            total = (size_t)(z + 5 - (p + off));
        } else {
            if (cl < 0) cl = 0;
            total = hl + (size_t)cl;
            if (len - off < total) break;
        }
        int status = atoi(p + off + 9);
        if (status == 200) {
            c_ok++;
            if (phase == P_MEASURE) { c_ok_meas++; h_add(&h_http, now - c->t_req); }
        } else {
            c_http_err++;
            note_err(p + off, total);
        }
        c->busy = 0;
        off += total;
        if (cclose) {
            /* the server closes after every response (soketi does): open a new connection */
            conn_close(c);
            c_pub_reconnect++;
            conn_open(c);
            return;
        }
        idle_pub[n_idle_pub++] = c;
    }
    c->in_len = 0;
    if (off < len) buf_append(&c->in, &c->in_len, &c->in_cap, p + off, len - off);
}

static void on_readable(conn *c) {
    size_t lo = c->in_len;
    if (lo > RBUF_SIZE / 2) die("frame too large");
    if (lo) memcpy(rbuf, c->in, lo);
    ssize_t n = read(c->fd, rbuf + lo, RBUF_SIZE - lo);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN) return;
        if (c->kind == K_HTTP) {
            /* publisher connection closed by the server: reconnect */
            int was_busy = c->busy;
            conn_close(c);
            c_pub_reconnect++;
            if (was_busy) c_http_err++;
            for (int i = 0; i < n_idle_pub; i++)
                if (idle_pub[i] == c) { idle_pub[i] = idle_pub[--n_idle_pub]; break; }
            conn_open(c);
            return;
        }
        conn_close(c);
        return;
    }
    int64_t now = mono_ns();
    if (c->kind == K_HTTP) http_parse(c, rbuf, lo + (size_t)n, now);
    else ws_parse(c, rbuf, lo + (size_t)n, now);
}

/* ---------------- blast server (generator self-check) ---------------- */
static char *blast_buf;
static size_t blast_len;
static void blast_build(void) {
    blast_len = 0;
    blast_buf = malloc(65536 + 256);
    char f[256];
    int frames = 0;
    while (blast_len < 65536 && (o_blast_frames <= 0 || frames++ < o_blast_frames)) {
        int n = snprintf(f + 2, sizeof f - 2, "{\"event\":\"ev\",\"channel\":\"bench\",\"data\":\"@ts%lld@\"}", (long long)mono_ns());
        f[0] = (char)0x81;
        f[1] = (char)n;
        memcpy(blast_buf + blast_len, f, (size_t)n + 2);
        blast_len += (size_t)n + 2;
    }
}
static void blast_readable(conn *c) {
    ssize_t n = read(c->fd, rbuf, RBUF_SIZE);
    if (n <= 0) { if (n < 0 && errno == EAGAIN) return; conn_close(c); return; }
    if (c->state == S_HANDSHAKE) {
        buf_append(&c->in, &c->in_len, &c->in_cap, rbuf, (size_t)n);
        if (!memmem(c->in, c->in_len, "\r\n\r\n", 4)) return;
        c->in_len = 0;
        static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        static const char est[] = "{\"event\":\"pusher:connection_established\",\"data\":\"{\\\"socket_id\\\":\\\"1.1\\\",\\\"activity_timeout\\\":120}\"}";
        char out[512];
        memcpy(out, resp, sizeof resp - 1);
        out[sizeof resp - 1] = (char)0x81;
        out[sizeof resp] = (char)(sizeof est - 1);
        memcpy(out + sizeof resp + 1, est, sizeof est - 1);
        c->state = S_OPEN;
        conn_send(c, out, sizeof resp + sizeof est);
        return;
    }
    ws_parse(c, rbuf, (size_t)n, 0);
}
static void blast_writable(conn *c) {
    if (c->out_len) { conn_flush(c); return; }
    if (c->state != S_SUBSCRIBED) { ep_mod(c, 0); return; }
    ssize_t w = write(c->fd, blast_buf, blast_len);
    if (w < 0 && errno != EAGAIN) { conn_close(c); return; }
    if (w > 0 && (size_t)w < blast_len) {
        /* keep frame boundaries: queue the rest of the buffer */
        buf_append(&c->out, &c->out_len, &c->out_cap, blast_buf + w, blast_len - (size_t)w);
    }
}
static int run_blast(void) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&dst, sizeof dst) < 0) die("bind: %s", strerror(errno));
    listen(ls, 4096);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
    blast_build();
    fprintf(stderr, "blast server listening on %d\n", o_port);
    struct epoll_event evs[1024];
    int64_t end = mono_ns() + (int64_t)(o_duration * 1e9);
    while (mono_ns() < end) {
        int n = epoll_wait(ep, evs, 1024, 100);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    conn *nc = conn_new(K_SRV, 0);
                    nc->fd = fd;
                    nc->state = S_HANDSHAKE;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) blast_readable(c);
            if (c->state != S_CLOSED && (evs[i].events & EPOLLOUT)) blast_writable(c);
        }
    }
    return 0;
}

/* ---------------- main loop ---------------- */
static int n_ws_target; /* websocket sockets to open */
static int n_opened;
static int64_t t_open_start;

static int ws_ready_count(void) {
    int r = 0;
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        if (c->kind != K_WS) continue;
        if (c->role == R_CHURNER ? c->state == S_OPEN : c->state == S_SUBSCRIBED) r++;
    }
    return r;
}

static void start_traffic(conn *c) {
    if (c->role == R_PAIR) {
        for (int i = 0; i < o_window; i++) send_client_event(c);
    } else if (c->role == R_CHURNER) {
        char uid[48];
        if (c->state == S_SUBSCRIBED) unsubscribe(c, presence_channel);
        snprintf(uid, sizeof uid, "c%d-%u", c->idx, c->seq++);
        subscribe_presence(c, uid, mono_ns());
    }
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static volatile sig_atomic_t stop_flag;
static void on_sig(int s) { (void)s; stop_flag = 1; }

static void opt_parse(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) die("bad arg %s", a);
        const char *v = argv[++i];
#define S(name, var) else if (!strcmp(a + 2, name)) var = v;
#define I(name, var) else if (!strcmp(a + 2, name)) var = atoi(v);
#define D(name, var) else if (!strcmp(a + 2, name)) var = atof(v);
        if (0) {}
        S("mode", o_mode) S("host", o_host) S("key", o_key) S("secret", o_secret) S("app-id", o_app)
        S("channel", o_channel) S("src", o_src) I("port", o_port) I("subs", o_subs) I("pubconns", o_pubconns)
        I("backlog", o_backlog) I("pairs", o_pairs) I("window", o_window) I("watchers", o_watchers)
        I("churners", o_churners) I("expect", o_expect) I("payload", o_payload) I("channels", o_channels) I("dump", o_dump) I("blast-frames", o_blast_frames) D("rate", o_rate)
        D("warmup", o_warmup) D("duration", o_duration) D("drain", o_drain) D("conn-rate", o_conn_rate)
        D("setup-timeout", o_setup_timeout) D("wait", o_wait)
        else die("unknown option %s", a);
    }
}

int main(int argc, char **argv) {
    opt_parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    rbuf = malloc(RBUF_SIZE);
    if (o_payload > 0) {
        if (o_payload >= (int)sizeof padding) o_payload = sizeof padding - 1;
        memset(padding, 'x', (size_t)o_payload);
    }
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)o_port);
    inet_pton(AF_INET, o_host, &dst.sin_addr);
    if (o_src[0]) {
        char *s = strdup(o_src), *tok, *save;
        for (tok = strtok_r(s, ",", &save); tok && nsrc < 64; tok = strtok_r(NULL, ",", &save))
            if (inet_pton(AF_INET, tok, &srcs[nsrc]) == 1) nsrc++;
    }
    ep = epoll_create1(0);
    int is_pub = !strcmp(o_mode, "pub"), is_idle = !strcmp(o_mode, "idle"), is_pairs = !strcmp(o_mode, "pairs"),
        is_pres = !strcmp(o_mode, "presence");
    if (!strcmp(o_mode, "blast")) {
        maxconns = 20000;
        conns = calloc((size_t)maxconns, sizeof(conn));
        return run_blast();
    }
    if (!(is_pub || is_idle || is_pairs || is_pres)) die("unknown mode %s", o_mode);
    if (is_pairs) { o_subs = 0; n_ws_target = 2 * o_pairs; }
    else if (is_pres) { o_subs = 0; n_ws_target = o_watchers + o_churners; }
    else n_ws_target = o_subs;
    if (is_idle) o_pubconns = 0;
    maxconns = n_ws_target + o_pubconns + 1;
    conns = calloc((size_t)maxconns, sizeof(conn));
    idle_pub = calloc((size_t)o_pubconns + 1, sizeof(conn *));
    for (int i = 0; i < n_ws_target; i++) {
        int role = R_SUB;
        if (is_pairs) role = R_PAIR;
        else if (is_pres) role = i < o_watchers ? R_WATCHER : R_CHURNER;
        conn_new(K_WS, role);
    }
    for (int i = 0; i < o_pubconns; i++) conn_open(conn_new(K_HTTP, 0));

    struct epoll_event *evs = calloc(4096, sizeof *evs);
    t_setup_start = t_open_start = mono_ns();
    int64_t conn_step = o_conn_rate > 0 ? (int64_t)(1e9 / o_conn_rate) : 0;
    double cpu0 = 0, cpu_meas = 0;
    int printed_ready = 0;
    int all_ready = 0;

    while (!stop_flag) {
        int64_t now = mono_ns();
        /* pace connection opening */
        while (n_opened < n_ws_target && (conn_step == 0 || now - t_open_start >= (int64_t)n_opened * conn_step)) {
            conn_open(&conns[n_opened++]);
            if (conn_step == 0 && n_opened % 256 == 0) break; /* let the loop breathe */
        }
        if (phase == P_SETUP) {
            int ready = (n_opened == n_ws_target) ? ws_ready_count() : -1;
            int pub_ready = 1;
            for (int i = n_ws_target; i < nconns; i++) if (conns[i].state != S_OPEN) pub_ready = 0;
            if (!all_ready && ready == n_ws_target && pub_ready) { all_ready = 1; t_all_ready = now; }
            if (is_idle) {
                if (!printed_ready && (all_ready || now - t_setup_start > (int64_t)(o_setup_timeout * 1e9))) {
                    printed_ready = 1;
                    if (!all_ready) t_all_ready = now;
                    int r = ws_ready_count();
                    printf("READY {\"subscribed\":%d,\"target\":%d,\"open_s\":%.3f,\"conn_err\":%llu}\n", r, n_ws_target,
                           (double)(t_all_ready - t_setup_start) / 1e9, (unsigned long long)c_conn_err);
                    fflush(stdout);
                    t_phase_start = now;
                }
                if (printed_ready) {
                    uint64_t got = 0;
                    if (c_deliv >= (uint64_t)o_expect * (uint64_t)n_ws_target) break;
                    (void)got;
                    if (now - t_phase_start > (int64_t)(o_wait * 1e9)) break;
                }
            } else if (all_ready || now - t_setup_start > (int64_t)(o_setup_timeout * 1e9)) {
                if (!all_ready) { fprintf(stderr, "setup timeout: %d/%d ready\n", ws_ready_count(), n_ws_target); t_all_ready = now; }
                for (int i = n_ws_target; i < nconns; i++) if (conns[i].state == S_OPEN) idle_pub[n_idle_pub++] = &conns[i];
                phase = P_WARMUP;
                t_phase_start = now;
                next_send = now;
                for (int i = 0; i < n_ws_target; i++)
                    if (conns[i].role == R_PAIR ? conns[i].state == S_SUBSCRIBED : (conns[i].role == R_CHURNER && conns[i].state == S_OPEN))
                        start_traffic(&conns[i]);
            }
        } else if (phase == P_WARMUP && now - t_phase_start >= (int64_t)(o_warmup * 1e9)) {
            phase = P_MEASURE;
            puts("PHASE measure");
            fflush(stdout);
            t_meas_start = t_phase_start = now;
            cpu0 = cpu_s();
        } else if (phase == P_MEASURE && now - t_phase_start >= (int64_t)(o_duration * 1e9)) {
            phase = P_DRAIN;
            t_meas_end = t_phase_start = now;
            cpu_meas = cpu_s() - cpu0;
            puts("PHASE drain");
            fflush(stdout);
        } else if (phase == P_DRAIN) {
            int done = 0;
            if (is_pub) done = (o_subs == 0 || c_deliv >= c_ok * (uint64_t)o_subs) && n_idle_pub == o_pubconns;
            if (now - t_phase_start >= (int64_t)(o_drain * 1e9)) done = 1;
            if (done) break;
        }
        pub_pump(now);
        int timeout = 50;
        if (n_opened < n_ws_target || (o_rate > 0 && phase <= P_MEASURE)) timeout = 1;
        if (phase == P_DRAIN) timeout = 5;
        int n = epoll_wait(ep, evs, 4096, timeout);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (c->state == S_CLOSED) continue;
            if (c->state == S_CONNECTING) {
                if (e & (EPOLLERR | EPOLLHUP)) {
                    int err = 0;
                    socklen_t el = sizeof err;
                    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                    c_conn_err++;
                    note_err(strerror(err), strlen(strerror(err)));
                    conn_close(c);
                    continue;
                }
                if (e & EPOLLOUT) {
                    ep_mod(c, 0);
                    c->want_out = 0;
                    on_connected(c);
                }
                continue;
            }
            if (e & EPOLLOUT) conn_flush(c);
            if (c->state != S_CLOSED && (e & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(c);
        }
    }
    if (phase == P_MEASURE) { t_meas_end = mono_ns(); cpu_meas = cpu_s() - cpu0; }
    double meas_s = t_meas_end > t_meas_start ? (double)(t_meas_end - t_meas_start) / 1e9 : 0;
    int ready = ws_ready_count();
    FILE *f = stdout;
    fprintf(f, "{\"mode\":\"%s\",\"target_conns\":%d,\"ready_conns\":%d,\"established\":%llu,\"setup_s\":%.3f,",
            o_mode, n_ws_target, ready, (unsigned long long)c_est, (double)(t_all_ready - t_setup_start) / 1e9);
    fprintf(f, "\"connect_rate\":%.1f,", t_all_ready > t_setup_start ? (double)c_est / ((double)(t_all_ready - t_setup_start) / 1e9) : 0.0);
    fprintf(f, "\"measure_s\":%.3f,\"gen_cpu_s\":%.3f,\"gen_cpu_pct\":%.1f,\"gen_cpu_total_s\":%.3f,", meas_s, cpu_meas,
            meas_s > 0 ? 100.0 * cpu_meas / meas_s : 0.0, cpu_s());
    fprintf(f, "\"deliveries\":%llu,\"deliveries_meas\":%llu,\"deliveries_per_s\":%.1f,", (unsigned long long)c_deliv,
            (unsigned long long)c_deliv_meas, meas_s > 0 ? (double)c_deliv_meas / meas_s : 0.0);
    fprintf(f, "\"sent\":%llu,\"accepted\":%llu,\"accepted_meas\":%llu,\"accepted_per_s\":%.1f,\"http_errors\":%llu,\"late_slots\":%llu,\"pub_reconnects\":%llu,",
            (unsigned long long)c_sent_pub, (unsigned long long)c_ok, (unsigned long long)c_ok_meas,
            meas_s > 0 ? (double)c_ok_meas / meas_s : 0.0, (unsigned long long)c_http_err, (unsigned long long)c_late,
            (unsigned long long)c_pub_reconnect);
    long long expected = is_pub ? (long long)(c_ok * (uint64_t)o_subs) : is_idle ? (long long)o_expect * n_ws_target : 0;
    fprintf(f, "\"expected_deliveries\":%lld,\"lost\":%lld,", expected, expected ? expected - (long long)c_deliv : 0);
    fprintf(f, "\"relayed\":%llu,\"relayed_meas\":%llu,\"relayed_per_s\":%.1f,", (unsigned long long)c_relayed,
            (unsigned long long)c_relayed_meas, meas_s > 0 ? (double)c_relayed_meas / meas_s : 0.0);
    fprintf(f, "\"joins\":%llu,\"joins_meas\":%llu,\"joins_per_s\":%.1f,\"member_added\":%llu,\"member_added_watchers_meas\":%llu,\"member_added_watchers_per_s\":%.1f,\"member_removed\":%llu,",
            (unsigned long long)c_joins, (unsigned long long)c_joins_meas, meas_s > 0 ? (double)c_joins_meas / meas_s : 0.0,
            (unsigned long long)c_madd, (unsigned long long)c_madd_meas, meas_s > 0 ? (double)c_madd_meas / meas_s : 0.0,
            (unsigned long long)c_mrem);
    fprintf(f, "\"frames\":%llu,\"conn_errors\":%llu,\"closed\":%llu,\"ws_errors\":%llu,\"pings\":%llu,\"first_error\":\"%s\",",
            (unsigned long long)c_frames, (unsigned long long)c_conn_err, (unsigned long long)c_closed,
            (unsigned long long)c_ws_err, (unsigned long long)c_pings, first_err);
    h_json(f, "lat", &h_deliv);
    fputc(',', f);
    h_json(f, "http_lat", &h_http);
    fputc(',', f);
    h_json(f, "handshake", &h_hs);
    fputc(',', f);
    h_json(f, "subscribe", &h_sub);
    fputc(',', f);
    h_json(f, "join", &h_join);
    fputc(',', f);
    h_json(f, "member_added_lat", &h_madd);
    fputs("}\n", f);
    fflush(f);
    return 0;
}
