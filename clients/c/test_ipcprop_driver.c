/*
 * test_ipcprop_driver.c: tests of the C driver client (run by tests/clients_c.rs).
 *
 *     test_ipcprop_driver DIR
 *     test_ipcprop_driver DIR --program PATH MAX_SENDERS
 *
 * DIR is an empty directory for the fake harness's sockets (the caller removes it). The
 * second form drives a program end to end instead (pipe_fixed, or the header's example;
 * cases with two senders only if MAX_SENDERS is at least 2).
 *
 * The generator, the CRC, the command parser and the environment are tested directly;
 * the serve functions each in a forked child that talks to a fake harness (this process)
 * over a Unix socket, the exact lines checked. Exits 0 if everything passed, else 1 with
 * what failed on standard error. Every child is killed and reaped before it exits.
 */
#include "ipcprop_driver.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long the fake harness waits for a line before it calls the client hung. */
#define TIMEOUT_MS 30000

static int failures;
static const char *dir;

/* Children to kill if a conversation fails; a negative entry is a process group. */
static pid_t kids[16];
static int nkids;

#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                            \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
            failures++;                                                                     \
        }                                                                                   \
    } while (0)

/* A failure in a conversation: kill every child, reap it, exit 1. */
static void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    for (int i = 0; i < nkids; i++) {
        kill(kids[i], SIGKILL);
        while (waitpid(kids[i] < 0 ? -kids[i] : kids[i], NULL, 0) < 0 && errno == EINTR) {
        }
    }
    exit(1);
}

static void forget_kid(pid_t pid) {
    for (int i = 0; i < nkids; i++)
        if (kids[i] == pid || kids[i] == -pid)
            kids[i] = kids[--nkids];
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void to_hex(const uint8_t *p, size_t n, char *out) {
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = '\0';
}

/* ------------------------------------------------------------------------------------ */

static void test_gen(void) {
    static const struct {
        uint64_t seed;
        uint32_t sender, seq;
        size_t len;
        const char *hex;
    } v[] = {
        {1, 0, 0, 0, ""},
        {1, 0, 0, 3, "42f8bd"},
        {1, 0, 1, 8, "0000000001000000"},
        {42, 3, 7, 21, "0300000007000000decdc9f9f6881c6a079774d7bb"},
        {UINT64_C(16045690984503111693), 1, 65535, 40,
         "01000000ffff0000a95d179da0275c15b70195ff7344c947ef058dfc788d777fc7593cd2535d090f"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t buf[64];
        char hex[129];
        memset(buf, 0xee, sizeof buf);
        ipcprop_gen(v[i].seed, v[i].sender, v[i].seq, v[i].len, buf);
        to_hex(buf, v[i].len, hex);
        CHECK(strcmp(hex, v[i].hex) == 0, "gen vector %zu: %s, expected %s", i, hex, v[i].hex);
        CHECK(buf[v[i].len] == 0xee, "gen vector %zu wrote past its length", i);
    }
    /* A prefix of a message is not the message's prefix (len is in the state), but the
     * identity is: every length from 8 on starts with sender and seq. */
    uint8_t a[100];
    ipcprop_gen(7, 0x01020304, 0x0a0b0c0d, sizeof a, a);
    CHECK(a[0] == 4 && a[3] == 1 && a[4] == 0x0d && a[7] == 0x0a, "gen identity");
}

/* CRC-32C bit by bit: the reference for the table. */
static uint32_t crc32c_bitwise(const uint8_t *p, size_t n) {
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = (crc >> 1) ^ ((crc & 1) ? 0x82f63b78u : 0);
    }
    return ~crc;
}

static void test_crc(void) {
    uint8_t zeros[32], ones[32], msg[1000];
    memset(zeros, 0, sizeof zeros);
    memset(ones, 0xff, sizeof ones);
    CHECK(ipcprop_crc32c((const uint8_t *)"123456789", 9) == 3808858755u, "crc32c(123456789)");
    CHECK(ipcprop_crc32c(NULL, 0) == 0, "crc32c of nothing");
    /* RFC 3720 (iSCSI), B.4. */
    CHECK(ipcprop_crc32c(zeros, 32) == 0x8a9136aau, "crc32c of 32 zero bytes");
    CHECK(ipcprop_crc32c(ones, 32) == 0x62a8ab43u, "crc32c of 32 0xff bytes");
    /* Every entry of the table: a one-byte message reads entry (byte ^ 0xff). */
    for (unsigned b = 0; b < 256; b++) {
        uint8_t one = (uint8_t)b;
        CHECK(ipcprop_crc32c(&one, 1) == crc32c_bitwise(&one, 1), "crc32c of byte %u", b);
    }
    ipcprop_gen(5, 6, 7, sizeof msg, msg);
    CHECK(ipcprop_crc32c(msg, sizeof msg) == crc32c_bitwise(msg, sizeof msg),
          "crc32c of 1000 bytes");
}

static int parse(const char *line, struct ipcprop_command *c, char *err) {
    return ipcprop_parse_command(line, strlen(line), c, err, 200);
}

static void test_parse(void) {
    struct ipcprop_command c;
    char err[200];

    CHECK(parse("{\"op\": \"send\", \"seq\": 3, \"len\": 100, \"sender\": 0, \"seed\": "
                "\"12345678901234567890\"}", &c, err) == 0, "send: %s", err);
    CHECK(c.op == IPCPROP_OP_SEND && c.seq == 3 && c.len == 100 && c.sender == 0 &&
          c.seed == UINT64_C(12345678901234567890), "send fields");
    CHECK(parse("{\"seed\":\"18446744073709551615\",\"sender\":4294967295,\"seq\":4294967295,"
                "\"len\":0,\"op\":\"send\"}", &c, err) == 0, "send at the limits: %s", err);
    CHECK(c.seed == UINT64_MAX && c.sender == UINT32_MAX && c.seq == UINT32_MAX && c.len == 0,
          "send at the limits: fields");
    CHECK(parse("{\"op\":\"recv\",\"count\":2}", &c, err) == 0 && c.op == IPCPROP_OP_RECV &&
          c.count == 2, "recv");
    CHECK(parse(" {\"op\":\"close\"} \r", &c, err) == 0 && c.op == IPCPROP_OP_CLOSE, "close");
    CHECK(parse("{\"op\":\"exit\"}", &c, err) == 0 && c.op == IPCPROP_OP_EXIT, "exit");
    CHECK(parse("{\"op\":\"\\u0065xit\"}", &c, err) == 0 && c.op == IPCPROP_OP_EXIT,
          "an escaped op");
    /* Unknown fields, whatever their value, and known fields another op would need. */
    CHECK(parse("{\"future\":{\"a\":[1,2.5e-3,{\"b\":null}],\"c\":\"x\\\"y\\n\\ud83d\\ude00\"},"
                "\"op\":\"recv\",\"flag\":true,\"neg\":-12,\"f\":false,\"n\":null,"
                "\"count\":1,\"seq\":\"not a number\",\"a-very-long-field-name-indeed\":1}",
                &c, err) == 0 && c.count == 1, "unknown fields: %s", err);
    CHECK(parse("{\"op\":\"send\",\"seq\":0,\"len\":5,\"sender\":1,\"seed\":\"9\","
                "\"data\":\"0102030405\"}", &c, err) == 0 && c.seed == 9, "send with data");

    static const char *const bad[] = {
        "",
        "[]",
        "\"op\"",
        "{\"op\":\"exit\"",
        "{\"op\":\"exit\"}}",
        "{\"op\":\"exit\"} x",
        "{\"op\":\"exit\",}",
        "{op:\"exit\"}",
        "{\"op\" \"exit\"}",
        "{\"op\":\"exit\" \"count\":1}",
        "{\"op\":\"exit\",\"x\":tru}",
        "{\"op\":\"exit\",\"x\":01}",
        "{\"op\":\"exit\",\"x\":1.}",
        "{\"op\":\"exit\",\"x\":-}",
        "{\"op\":\"exit\",\"x\":\"\\q\"}",
        "{\"op\":\"exit\",\"x\":\"\\u12\"}",
        "{\"op\":\"exit\",\"x\":\"tab\there\"}",
        "{\"op\":\"exit\",\"x\":[1,}",
        "{\"op\":\"exit\",\"x\":{\"a\"}}",
        "{}",
        "{\"op\":7}",
        "{\"op\":\"dance\"}",
        "{\"op\":\"recv\"}",
        "{\"op\":\"recv\",\"count\":-1}",
        "{\"op\":\"recv\",\"count\":1.0}",
        "{\"op\":\"recv\",\"count\":\"1\"}",
        "{\"op\":\"recv\",\"count\":18446744073709551616}",
        "{\"op\":\"send\",\"len\":1,\"sender\":0,\"seed\":\"1\"}",
        "{\"op\":\"send\",\"seq\":0,\"sender\":0,\"seed\":\"1\"}",
        "{\"op\":\"send\",\"seq\":0,\"len\":1,\"seed\":\"1\"}",
        "{\"op\":\"send\",\"seq\":0,\"len\":1,\"sender\":0}",
        "{\"op\":\"send\",\"seq\":4294967296,\"len\":1,\"sender\":0,\"seed\":\"1\"}",
        "{\"op\":\"send\",\"seq\":0,\"len\":1,\"sender\":4294967296,\"seed\":\"1\"}",
        "{\"op\":\"send\",\"seq\":0,\"len\":-1,\"sender\":0,\"seed\":\"1\"}",
        "{\"op\":\"send\",\"seq\":0,\"len\":1,\"sender\":0,\"seed\":1}",
        "{\"op\":\"send\",\"seq\":0,\"len\":1,\"sender\":0,\"seed\":\"\"}",
        "{\"op\":\"send\",\"seq\":0,\"len\":1,\"sender\":0,\"seed\":\"-1\"}",
        "{\"op\":\"send\",\"seq\":0,\"len\":1,\"sender\":0,\"seed\":\"1x\"}",
        "{\"op\":\"send\",\"seq\":0,\"len\":1,\"sender\":0,\"seed\":\"18446744073709551616\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(parse(bad[i], &c, err) == -1 && err[0] != '\0',
              "a malformed line was accepted (or no error text): %s", bad[i]);
    }
    /* Nesting has a limit (no stack overflow on a hostile line). */
    char deep[400];
    memset(deep, '[', sizeof deep);
    memcpy(deep, "{\"x\":", 5);
    deep[sizeof deep - 1] = '\0';
    CHECK(parse(deep, &c, err) == -1, "deep nesting");
    /* ... 64 levels, even when the line is valid JSON; 63 are fine. */
    for (int levels = 63; levels <= 64; levels++) {
        char nested[300];
        int k = sprintf(nested, "{\"op\":\"exit\",\"x\":");
        for (int i = 0; i < levels; i++)
            nested[k++] = '[';
        for (int i = 0; i < levels; i++)
            nested[k++] = ']';
        strcpy(nested + k, "}");
        CHECK(parse(nested, &c, err) == (levels < 64 ? 0 : -1), "%d levels of nesting: %s",
              levels + 1, nested);
    }
    /* The length is what counts, not a NUL. */
    CHECK(ipcprop_parse_command("{\"op\":\"exit\"}garbage", 13, &c, err, sizeof err) == 0 &&
          c.op == IPCPROP_OP_EXIT, "a line without NUL: %s", err);
}

static void set_env(const char *senders, const char *control, const char *dirv,
                    const char *casev, const char *role, const char *index) {
    const char *names[] = {"IPCPROP_SENDERS", "IPCPROP_CONTROL", "IPCPROP_DIR",
                           "IPCPROP_CASE", "IPCPROP_ROLE", "IPCPROP_INDEX"};
    const char *values[] = {senders, control, dirv, casev, role, index};
    for (int i = 0; i < 6; i++) {
        if (values[i] != NULL)
            setenv(names[i], values[i], 1);
        else
            unsetenv(names[i]);
    }
}

static void test_env(void) {
    struct ipcprop_env e;
    setenv("IPCPROP_PROTOCOL", "1", 1);
    set_env("3", "/tmp/x/control", "/tmp/x", "ipcprop-1-2", NULL, NULL);
    CHECK(ipcprop_env(&e) == 0 && e.senders == 3 && strcmp(e.control, "/tmp/x/control") == 0 &&
          strcmp(e.dir, "/tmp/x") == 0 && strcmp(e.case_name, "ipcprop-1-2") == 0 &&
          e.role == IPCPROP_ROLE_ANY && e.index == -1, "one-program environment");
    set_env("3", "/c", "/d", "k", "sender", "2");
    CHECK(ipcprop_env(&e) == 0 && e.role == IPCPROP_ROLE_SENDER && e.index == 2, "sender 2");
    set_env("1", "/c", "/d", "k", "receiver", NULL);
    CHECK(ipcprop_env(&e) == 0 && e.role == IPCPROP_ROLE_RECEIVER && e.index == -1,
          "receiver");

    fputs("(the next lines of ipcprop: messages are expected)\n", stderr);
    static const char *const bad[][6] = {
        {NULL, "/c", "/d", "k", NULL, NULL},
        {"0", "/c", "/d", "k", NULL, NULL},
        {"-1", "/c", "/d", "k", NULL, NULL},
        {"2x", "/c", "/d", "k", NULL, NULL},
        {"", "/c", "/d", "k", NULL, NULL},
        {"99999999999999999999", "/c", "/d", "k", NULL, NULL},
        {"1", NULL, "/d", "k", NULL, NULL},
        {"1", "", "/d", "k", NULL, NULL},
        {"1", "/c", NULL, "k", NULL, NULL},
        {"1", "/c", "/d", NULL, NULL, NULL},
        {"1", "/c", "/d", "k", "both", NULL},
        {"2", "/c", "/d", "k", "sender", NULL},
        {"2", "/c", "/d", "k", "sender", "2"},
        {"2", "/c", "/d", "k", "sender", "x"},
        {"2", "/c", "/d", "k", "receiver", "0"},
        {"2", "/c", "/d", "k", NULL, "0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set_env(bad[i][0], bad[i][1], bad[i][2], bad[i][3], bad[i][4], bad[i][5]);
        CHECK(ipcprop_env(&e) == -1, "invalid environment %zu accepted", i);
    }
    set_env("1", "/c", "/d", "k", NULL, NULL);
    setenv("IPCPROP_PROTOCOL", "2", 1);
    CHECK(ipcprop_env(&e) == -1, "protocol 2 accepted");
    fputs("(end of the expected messages)\n", stderr);
    unsetenv("IPCPROP_PROTOCOL");
    set_env(NULL, NULL, NULL, NULL, NULL, NULL);
}

/* ipcprop_env with standard error caught: returns its result, its message in msg. */
static int env_caught(struct ipcprop_env *e, char *msg, size_t n) {
    msg[0] = '\0';
    FILE *caught = tmpfile();
    if (caught == NULL) {
        CHECK(0, "tmpfile: %s", strerror(errno));
        return ipcprop_env(e);
    }
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(caught), 2);
    int rc = ipcprop_env(e);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(caught);
    size_t got = fread(msg, 1, n - 1, caught);
    msg[got] = '\0';
    fclose(caught);
    return rc;
}

static void test_env_recover(void) {
    struct ipcprop_env e;
    char msg[512];
    setenv("IPCPROP_PROTOCOL", "1", 1);
    set_env("2", "/c", "/d", "k", NULL, NULL);
    unsetenv("IPCPROP_RECOVER");
    CHECK(env_caught(&e, msg, sizeof msg) == 0 && e.recover == 0, "no IPCPROP_RECOVER: %s",
          msg);
    static const char *const off[] = {"0", ""};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        setenv("IPCPROP_RECOVER", off[i], 1);
        e.recover = 7;
        CHECK(env_caught(&e, msg, sizeof msg) == 0 && e.recover == 0,
              "IPCPROP_RECOVER=\"%s\" is not 0: %s", off[i], msg);
    }
    setenv("IPCPROP_RECOVER", "1", 1);
    CHECK(env_caught(&e, msg, sizeof msg) == 0 && e.recover == 1, "IPCPROP_RECOVER=1: %s", msg);
    set_env("1", "/c", "/d", "k", "receiver", NULL);
    CHECK(env_caught(&e, msg, sizeof msg) == 0 && e.recover == 1 &&
          e.role == IPCPROP_ROLE_RECEIVER, "a recovering receiver: %s", msg);
    static const char *const bad[] = {"yes", "2", "01", " 1", "1 ", "true"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("IPCPROP_RECOVER", bad[i], 1);
        CHECK(env_caught(&e, msg, sizeof msg) == -1, "IPCPROP_RECOVER=\"%s\" accepted", bad[i]);
        CHECK(strstr(msg, "IPCPROP_RECOVER") != NULL && strstr(msg, bad[i]) != NULL,
              "the error for IPCPROP_RECOVER=\"%s\" names neither it nor its value: %s", bad[i],
              msg);
    }
    unsetenv("IPCPROP_RECOVER");
    unsetenv("IPCPROP_PROTOCOL");
    set_env(NULL, NULL, NULL, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* The fake harness                                                                     */

struct conn {
    int fd;
    pid_t pid;       /* the peer, from SO_PEERCRED */
    uint64_t last_t; /* the last line's t */
    size_t len, used;
    char buf[1 << 17];
};

static int listen_at(const char *path) {
    struct sockaddr_un a;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (fd < 0 || strlen(path) >= sizeof a.sun_path)
        fatal("socket for %s", path);
    strcpy(a.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0)
        fatal("bind/listen %s: %s", path, strerror(errno));
    return fd;
}

static void wait_readable(int fd, const char *what) {
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, TIMEOUT_MS)) < 0 && errno == EINTR) {
    }
    if (r == 0)
        fatal("nothing came within %d ms (%s)", TIMEOUT_MS, what);
}

static struct conn *accept_conn(int lfd, uint64_t t0) {
    struct ucred cred;
    socklen_t n = sizeof cred;
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        fatal("out of memory");
    wait_readable(lfd, "a connection");
    c->fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c->fd < 0 || getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &n) != 0)
        fatal("accept: %s", strerror(errno));
    c->pid = cred.pid;
    c->last_t = t0;
    return c;
}

static void conn_free(struct conn *c) {
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

/* The next line, without its newline, valid until the next call. */
static char *conn_line(struct conn *c) {
    if (c->used > 0) {
        memmove(c->buf, c->buf + c->used, c->len - c->used);
        c->len -= c->used;
        c->used = 0;
    }
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl != NULL) {
            *nl = '\0';
            c->used = (size_t)(nl - c->buf) + 1;
            return c->buf;
        }
        if (c->len == sizeof c->buf - 1)
            fatal("a line longer than %zu bytes", sizeof c->buf);
        wait_readable(c->fd, "a line");
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            c->buf[c->len] = '\0';
            fatal("the connection of pid %d ended (%s) after: %.200s", (int)c->pid,
                  r < 0 ? strerror(errno) : "end of file", c->buf);
        }
        c->len += (size_t)r;
    }
}

static void conn_send(struct conn *c, const char *line) {
    size_t n = strlen(line);
    char *full = malloc(n + 2);
    if (full == NULL)
        fatal("out of memory");
    memcpy(full, line, n);
    full[n] = '\n';
    if (send(c->fd, full, n + 1, MSG_NOSIGNAL) != (ssize_t)(n + 1))
        fatal("sending %s: %s", line, strerror(errno));
    free(full);
}

/* Reads a line and checks it is exactly PREFIX"t":<digits>}, with t not before the last
 * line's (or the start) and not after now. Returns t. */
static uint64_t expect(struct conn *c, const char *fmt, ...) {
    static char want[20000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want - 8, fmt, ap);
    va_end(ap);
    strcat(want, "\"t\":");
    char *line = conn_line(c);
    uint64_t read_at = now_ns();
    size_t n = strlen(want);
    if (strncmp(line, want, n) != 0)
        fatal("expected %.300s...\n      got %.300s", want, line);
    char *p = line + n, *end;
    if (*p < '1' || *p > '9')
        fatal("t is not a positive integer: %.300s", line);
    errno = 0;
    unsigned long long t = strtoull(p, &end, 10);
    if (errno != 0 || strcmp(end, "}") != 0)
        fatal("the line does not end with t and '}': %.300s", line);
    if (t < c->last_t)
        fatal("t went backwards (%llu after %llu): %.300s", t,
              (unsigned long long)c->last_t, line);
    if (t > read_at)
        fatal("t %llu is later than the moment the line was read (%llu)", t,
              (unsigned long long)read_at);
    c->last_t = t;
    return t;
}

/* Waits for a child and returns its exit status, or 1000 + signal. */
static int reap(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            fatal("waitpid: %s", strerror(errno));
    forget_kid(pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
}

static pid_t fork_kid(void) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        fatal("fork: %s", strerror(errno));
    if (pid > 0)
        kids[nkids++] = pid;
    return pid;
}

/* Waits until pid sleeps (state S in /proc/PID/stat: blocked in a system call). */
static void wait_sleeping(pid_t pid) {
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int tries = 0; tries < TIMEOUT_MS; tries++) {
        FILE *f = fopen(path, "r");
        size_t n = f != NULL ? fread(stat, 1, sizeof stat - 1, f) : 0;
        if (f != NULL)
            fclose(f);
        stat[n] = '\0';
        char *state = strrchr(stat, ')'); /* after "pid (comm)" */
        if (state != NULL && state[1] == ' ' && state[2] == 'S')
            return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    fatal("process %d never blocked", (int)pid);
}

/* Sends a storm of SIGURG to pid once it is blocked: its blocking call is interrupted,
 * and must be retried. */
static void storm(pid_t pid) {
    wait_sleeping(pid);
    for (int i = 0; i < 300; i++) {
        kill(pid, SIGURG);
        if (i % 30 == 0)
            sched_yield();
    }
}

/* ------------------------------------------------------------------------------------ */
/* A sender against the fake harness                                                    */

/* What a sender's callbacks do: report each message on `side` (its length, crc and first
 * 8 bytes), and fail the way the message's length says. */
struct fake_sender {
    int side;
    int closes;
};

#define LEN_DISCONNECTED 13
#define LEN_FAILED 14

static int fake_send(void *ctx, const uint8_t *msg, size_t len, char *err, size_t errlen) {
    struct fake_sender *f = ctx;
    struct sigaction sa;
    uint8_t report[20];
    uint64_t l = len;
    uint32_t crc = ipcprop_crc32c(msg, len);

    /* The handler the library promises: SIGURG caught, without SA_RESTART. */
    if (sigaction(SIGURG, NULL, &sa) != 0 || sa.sa_handler == SIG_DFL ||
        sa.sa_handler == SIG_IGN || (sa.sa_flags & SA_RESTART) != 0) {
        snprintf(err, errlen, "SIGURG is not caught without SA_RESTART");
        return IPCPROP_FAILED;
    }
    memcpy(report, &l, 8);
    memcpy(report + 8, &crc, 4);
    memset(report + 12, 0, 8);
    memcpy(report + 12, msg, len < 8 ? len : 8);
    if (write(f->side, report, sizeof report) != (ssize_t)sizeof report) {
        snprintf(err, errlen, "side pipe: %s", strerror(errno));
        return IPCPROP_FAILED;
    }
    if (len == LEN_DISCONNECTED) {
        snprintf(err, errlen, "write: %s", strerror(EPIPE));
        return IPCPROP_DISCONNECTED;
    }
    if (len == LEN_FAILED) {
        /* A quote, a backslash, a newline, a byte that is not UTF-8, and UTF-8. */
        snprintf(err, errlen, "bad \"x\\\"\n\xff caf\xc3\xa9");
        return IPCPROP_FAILED;
    }
    return 0;
}

static void fake_close(void *ctx) {
    ((struct fake_sender *)ctx)->closes++;
}

/* Starts a child serving sender `index` on a socket at DIR/name; returns its pid, the
 * accepted connection in *c and the read end of its side pipe in *side. */
static pid_t start_sender(const char *name, int index, int with_close, struct conn **c,
                          int *side, uint64_t *t0) {
    char path[4096];
    int sp[2];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int lfd = listen_at(path);
    if (pipe(sp) != 0)
        fatal("pipe");
    *t0 = now_ns();
    pid_t pid = fork_kid();
    if (pid == 0) {
        struct fake_sender f = {sp[1], 0};
        close(sp[0]);
        close(lfd);
        setenv("IPCPROP_CONTROL", path, 1);
        int rc = ipcprop_serve_sender(index, fake_send, with_close ? fake_close : NULL, &f);
        if (rc != 0)
            _exit(20);
        _exit(f.closes == (with_close ? 1 : 0) ? 0 : 10);
    }
    close(sp[1]);
    *c = accept_conn(lfd, *t0);
    close(lfd);
    unlink(path);
    *side = sp[0];
    if ((*c)->pid != pid)
        fatal("the peer of the control socket is %d, not the child %d", (int)(*c)->pid,
              (int)pid);
    return pid;
}

/* Sends `send`, checks `sending`, the message the callback got, and returns. */
static void command_send(struct conn *c, int side, uint32_t sender, uint32_t seq, size_t len,
                         uint64_t seed) {
    char line[256];
    uint8_t report[20], *want = malloc(len + 1);
    uint64_t l;
    uint32_t crc;
    if (want == NULL)
        fatal("out of memory");
    snprintf(line, sizeof line,
             "{\"op\":\"send\",\"seq\":%u,\"len\":%zu,\"sender\":%u,\"seed\":\"%llu\"}", seq,
             len, sender, (unsigned long long)seed);
    conn_send(c, line);
    expect(c, "{\"ev\":\"sending\",\"seq\":%u,", seq);
    wait_readable(side, "the message from the send callback");
    if (read(side, report, sizeof report) != (ssize_t)sizeof report)
        fatal("side pipe");
    ipcprop_gen(seed, sender, seq, len, want);
    memcpy(&l, report, 8);
    memcpy(&crc, report + 8, 4);
    if (l != len || crc != ipcprop_crc32c(want, len) ||
        memcmp(report + 12, want, len < 8 ? len : 8) != 0)
        fatal("the send callback got another message than gen(%llu, %u, %u, %zu)",
              (unsigned long long)seed, sender, seq, len);
    free(want);
}

static void test_sender(void) {
    struct conn *c;
    int side;
    uint64_t t0;
    const uint64_t big_seed = UINT64_C(16045690984503111693);

    /* Sends that succeed, a storm while the sender waits for a command, a send that finds
     * the receiver gone, exit with a close callback. */
    pid_t pid = start_sender("s1", 0, 1, &c, &side, &t0);
    expect(c, "{\"hello\":\"sender\",\"index\":0,\"pid\":%d,\"protocol\":1,", (int)pid);
    command_send(c, side, 0, 0, 0, 1);
    expect(c, "{\"ev\":\"sent\",\"seq\":0,");
    command_send(c, side, 0, 1, 40, big_seed);
    expect(c, "{\"ev\":\"sent\",\"seq\":1,");
    storm(pid);
    command_send(c, side, 0, 2, 100000, 42); /* a bigger buffer */
    expect(c, "{\"ev\":\"sent\",\"seq\":2,");
    storm(pid);
    command_send(c, side, 0, 3, 7, 42); /* and a smaller one again */
    expect(c, "{\"ev\":\"sent\",\"seq\":3,");
    command_send(c, side, 0, 4, LEN_DISCONNECTED, 5);
    expect(c, "{\"ev\":\"send_failed\",\"seq\":4,\"error\":\"write: %s\",\"disconnected\":true,",
           strerror(EPIPE));
    conn_send(c, "{\"op\":\"exit\",\"reason\":\"a field the client does not know\"}");
    expect(c, "{\"ev\":\"bye\",");
    wait_readable(c->fd, "the end of the connection after bye");
    CHECK(read(c->fd, c->buf, 1) == 0, "the sender did not close its connection after bye");
    CHECK(reap(pid) == 0, "sender 0 did not exit 0 after exit, or its close was not called "
                          "exactly once");
    close(side);
    conn_free(c);

    /* A send that fails otherwise, its error text escaped; no close callback. */
    pid = start_sender("s2", 2, 0, &c, &side, &t0);
    expect(c, "{\"hello\":\"sender\",\"index\":2,\"pid\":%d,\"protocol\":1,", (int)pid);
    command_send(c, side, 2, 0, LEN_FAILED, 5);
    expect(c, "{\"ev\":\"send_failed\",\"seq\":0,\"error\":\"bad \\\"x\\\\\\\"\\u000a? "
              "caf\xc3\xa9\",\"disconnected\":false,");
    conn_send(c, "{\"op\":\"exit\"}");
    expect(c, "{\"ev\":\"bye\",");
    CHECK(reap(pid) == 0, "sender 2 did not exit 0");
    close(side);
    conn_free(c);
}

/* ------------------------------------------------------------------------------------ */
/* The receiver against the fake harness                                                */

struct step {
    int rc;      /* what recv returns */
    size_t len;  /* rc == 0: gen(seed, 1, seq = len, len) */
    const char *err;
};

struct fake_receiver {
    const struct step *steps;
    size_t next;
    uint8_t *buf;
    int closes;
};

static int fake_recv(void *ctx, const uint8_t **msg, size_t *len, char *err, size_t errlen) {
    struct fake_receiver *f = ctx;
    const struct step *s = &f->steps[f->next++];
    if (s->rc != 0) {
        snprintf(err, errlen, "%s", s->err);
        return s->rc;
    }
    free(f->buf);
    f->buf = s->len > 0 ? malloc(s->len) : NULL;
    if (s->len > 0 && f->buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return IPCPROP_FAILED;
    }
    if (f->buf != NULL)
        ipcprop_gen(99, 1, (uint32_t)s->len, s->len, f->buf);
    *msg = f->buf;
    *len = s->len;
    return 0;
}

static void fake_recv_close(void *ctx) {
    ((struct fake_receiver *)ctx)->closes++;
}

static pid_t start_receiver(const char *name, const struct step *steps, int with_close,
                            struct conn **c) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int lfd = listen_at(path);
    uint64_t t0 = now_ns();
    pid_t pid = fork_kid();
    if (pid == 0) {
        struct fake_receiver f = {steps, 0, NULL, 0};
        close(lfd);
        setenv("IPCPROP_CONTROL", path, 1);
        int rc = ipcprop_serve_receiver(fake_recv, with_close ? fake_recv_close : NULL, &f);
        free(f.buf);
        if (rc != 0)
            _exit(20);
        _exit(f.closes == (with_close ? 1 : 0) ? 0 : 10);
    }
    *c = accept_conn(lfd, t0);
    close(lfd);
    unlink(path);
    if ((*c)->pid != pid)
        fatal("the peer of the control socket is %d, not the child %d", (int)(*c)->pid,
              (int)pid);
    expect(*c, "{\"hello\":\"receiver\",\"pid\":%d,\"protocol\":1,", (int)pid);
    return pid;
}

/* Expects `received` for step len: data in hex up to 4096 bytes, else len, crc, id. */
static void expect_received(struct conn *c, size_t len) {
    uint8_t *m = malloc(len + 1);
    char *hex = malloc(2 * len + 1);
    if (m == NULL || hex == NULL)
        fatal("out of memory");
    ipcprop_gen(99, 1, (uint32_t)len, len, m);
    if (len <= 4096) {
        to_hex(m, len, hex);
        expect(c, "{\"ev\":\"received\",\"data\":\"%s\",", hex);
    } else {
        to_hex(m, 8, hex);
        expect(c, "{\"ev\":\"received\",\"len\":%zu,\"crc\":%u,\"id\":\"%s\",", len,
               ipcprop_crc32c(m, len), hex);
    }
    free(m);
    free(hex);
}

static void test_receiver(void) {
    struct conn *c;

    /* Messages around the data/len boundary, a storm, then the end of stream inside a
     * command that asked for more; exit closes once. */
    static const struct step r1[] = {
        {0, 0, NULL}, {0, 4096, NULL}, {0, 4097, NULL}, {0, 21, NULL}, {IPCPROP_EOS, 0, ""},
    };
    pid_t pid = start_receiver("r1", r1, 1, &c);
    conn_send(c, "{\"op\":\"recv\",\"count\":2}");
    expect(c, "{\"ev\":\"receiving\",\"got\":0,");
    expect_received(c, 0);
    expect(c, "{\"ev\":\"receiving\",\"got\":1,");
    expect_received(c, 4096);
    storm(pid);
    conn_send(c, "{\"op\":\"recv\",\"count\":1}");
    expect(c, "{\"ev\":\"receiving\",\"got\":2,");
    expect_received(c, 4097);
    conn_send(c, "{\"op\":\"recv\",\"count\":5}");
    expect(c, "{\"ev\":\"receiving\",\"got\":3,");
    expect_received(c, 21);
    expect(c, "{\"ev\":\"receiving\",\"got\":4,");
    expect(c, "{\"ev\":\"eos\",");
    conn_send(c, "{\"op\":\"exit\"}");
    expect(c, "{\"ev\":\"bye\",");
    CHECK(reap(pid) == 0, "receiver r1 did not exit 0, or did not close exactly once");
    conn_free(c);

    /* A message cut off; close, then exit: the close callback runs once. */
    static const struct step r2[] = {
        {0, 9000, NULL}, {IPCPROP_CUT_OFF, 0, "end of file after 3 of a frame's 10 bytes"},
    };
    pid = start_receiver("r2", r2, 1, &c);
    conn_send(c, "{\"op\":\"recv\",\"count\":3}");
    expect(c, "{\"ev\":\"receiving\",\"got\":0,");
    expect_received(c, 9000);
    expect(c, "{\"ev\":\"receiving\",\"got\":1,");
    expect(c, "{\"ev\":\"cut_off\",\"error\":\"end of file after 3 of a frame's 10 bytes\",");
    conn_send(c, "{\"op\":\"close\"}");
    expect(c, "{\"ev\":\"closed\",");
    conn_send(c, "{\"op\":\"exit\"}");
    expect(c, "{\"ev\":\"bye\",");
    CHECK(reap(pid) == 0, "receiver r2 did not exit 0, or did not close exactly once");
    conn_free(c);

    /* A receive error, with no text: the library gives one. Then another kind. */
    static const struct step r3[] = {{IPCPROP_FAILED, 0, ""}};
    pid = start_receiver("r3", r3, 0, &c);
    conn_send(c, "{\"op\":\"recv\",\"count\":1}");
    expect(c, "{\"ev\":\"receiving\",\"got\":0,");
    expect(c, "{\"ev\":\"recv_failed\",\"error\":\"receive failed\",");
    conn_send(c, "{\"op\":\"exit\"}");
    expect(c, "{\"ev\":\"bye\",");
    CHECK(reap(pid) == 0, "receiver r3 did not exit 0");
    conn_free(c);

    static const struct step r4[] = {{IPCPROP_FAILED, 0, "read: Input/output error"}};
    pid = start_receiver("r4", r4, 1, &c);
    conn_send(c, "{\"op\":\"close\"}");
    expect(c, "{\"ev\":\"closed\",");
    conn_send(c, "{\"op\":\"recv\",\"count\":1}");
    expect(c, "{\"ev\":\"receiving\",\"got\":0,");
    expect(c, "{\"ev\":\"recv_failed\",\"error\":\"read: Input/output error\",");
    conn_send(c, "{\"op\":\"exit\"}");
    expect(c, "{\"ev\":\"bye\",");
    CHECK(reap(pid) == 0, "receiver r4 did not exit 0, or did not close exactly once");
    conn_free(c);
}

/* ------------------------------------------------------------------------------------ */
/* The harness going away, and lines the client cannot understand                       */

static void test_connection_errors(void) {
    struct conn *c;
    int side;
    uint64_t t0;
    static const struct step none[] = {{IPCPROP_EOS, 0, ""}};

    fputs("(the next lines of ipcprop: messages are expected)\n", stderr);
    /* The harness goes away between commands: the role exits with 3. */
    pid_t pid = start_sender("e1", 0, 1, &c, &side, &t0);
    expect(c, "{\"hello\":\"sender\",\"index\":0,\"pid\":%d,\"protocol\":1,", (int)pid);
    conn_free(c);
    CHECK(reap(pid) == 3, "a sender whose harness is gone did not _exit(3)");
    close(side);

    /* ... or in the middle of a line. */
    pid = start_receiver("e2", none, 1, &c);
    if (write(c->fd, "{\"op\":", 6) != 6)
        fatal("write");
    conn_free(c);
    CHECK(reap(pid) == 3, "a receiver whose harness is gone mid-line did not _exit(3)");

    /* Malformed lines: the serve function returns -1 (the child exits 20). */
    static const char *const bad[] = {
        "{\"op\":\"send\",\"seq\":0}",      /* a missing field */
        "{\"op\":\"recv\",\"count\":1}",    /* an op for the other role */
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pid = start_sender("e3", 0, 1, &c, &side, &t0);
        expect(c, "{\"hello\":\"sender\",\"index\":0,\"pid\":%d,\"protocol\":1,", (int)pid);
        conn_send(c, bad[i]);
        CHECK(reap(pid) == 20, "a sender accepted %s", bad[i]);
        close(side);
        conn_free(c);
    }
    pid = start_receiver("e4", none, 1, &c);
    conn_send(c, "{\"op\":\"send\",\"seq\":0,\"len\":1,\"sender\":0,\"seed\":\"1\"}");
    CHECK(reap(pid) == 20, "the receiver accepted a send");
    conn_free(c);

    /* A line longer than 64 KiB. */
    pid = start_receiver("e5", none, 1, &c);
    {
        size_t n = IPCPROP_MAX_LINE + 100;
        char *junk = malloc(n);
        if (junk == NULL)
            fatal("out of memory");
        memset(junk, ' ', n);
        junk[0] = '{';
        /* The client stops reading at the limit; the rest fits in the socket's buffer (or
         * the send fails once the client is gone). */
        ssize_t w = send(c->fd, junk, n, MSG_NOSIGNAL);
        (void)w;
        free(junk);
    }
    CHECK(reap(pid) == 20, "the receiver accepted a line longer than 64 KiB");
    conn_free(c);

    /* No control socket at all: -1, not an exit. */
    pid = fork_kid();
    if (pid == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/nobody-listens", dir);
        setenv("IPCPROP_CONTROL", path, 1);
        _exit(ipcprop_serve_receiver(fake_recv, NULL, NULL) == -1 ? 0 : 1);
    }
    CHECK(reap(pid) == 0, "serving without a harness did not return -1");
    fputs("(end of the expected messages)\n", stderr);
}

/* ------------------------------------------------------------------------------------ */
/* pipe_fixed, end to end                                                               */

struct program {
    pid_t pid;
    struct conn *senders[4];
    struct conn *receiver;
};

/* Starts PROGRAM with `senders` senders in its own process group; accepts and checks the
 * hellos. */
static void start_program(const char *program, const char *name, int senders,
                          struct program *p) {
    char path[4200], casedir[4096], n[16];
    if (access(program, X_OK) != 0)
        fatal("%s: %s", program, strerror(errno));
    snprintf(casedir, sizeof casedir, "%s/%s", dir, name);
    if (mkdir(casedir, 0700) != 0)
        fatal("mkdir %s: %s", casedir, strerror(errno));
    snprintf(path, sizeof path, "%s/control", casedir);
    int lfd = listen_at(path);
    uint64_t t0 = now_ns();
    memset(p, 0, sizeof *p);
    p->pid = fork_kid();
    if (p->pid == 0) {
        setpgid(0, 0);
        snprintf(n, sizeof n, "%d", senders);
        setenv("IPCPROP_PROTOCOL", "1", 1);
        setenv("IPCPROP_CONTROL", path, 1);
        setenv("IPCPROP_SENDERS", n, 1);
        setenv("IPCPROP_DIR", casedir, 1);
        setenv("IPCPROP_CASE", name, 1);
        execl(program, program, (char *)NULL);
        _exit(127);
    }
    setpgid(p->pid, p->pid);
    kids[nkids - 1] = -p->pid; /* kill the whole group on failure */
    for (int i = 0; i <= senders; i++) {
        struct conn *c = accept_conn(lfd, t0);
        char *line = conn_line(c);
        int index, pid;
        c->buf[c->used - 1] = '\n'; /* read it again with expect() */
        c->used = 0;
        if (sscanf(line, "{\"hello\":\"sender\",\"index\":%d,\"pid\":%d,", &index, &pid) == 2) {
            if (index < 0 || index >= senders || p->senders[index] != NULL)
                fatal("a hello with a bad or repeated index: %s", line);
            expect(c, "{\"hello\":\"sender\",\"index\":%d,\"pid\":%d,\"protocol\":1,", index,
                   (int)c->pid);
            p->senders[index] = c;
        } else {
            if (p->receiver != NULL)
                fatal("two receivers");
            expect(c, "{\"hello\":\"receiver\",\"pid\":%d,\"protocol\":1,", (int)c->pid);
            p->receiver = c;
        }
    }
    close(lfd);
    unlink(path);
}

static void say(struct conn *c, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    conn_send(c, line);
}

static void pf_send(struct conn *c, uint32_t sender, uint32_t seq, size_t len) {
    say(c, "{\"op\":\"send\",\"seq\":%u,\"len\":%zu,\"sender\":%u,\"seed\":\"77\"}", seq, len,
        sender);
    expect(c, "{\"ev\":\"sending\",\"seq\":%u,", seq);
}

static void pf_received(struct conn *c, uint32_t sender, uint32_t seq, size_t len) {
    uint8_t *m = malloc(len + 1);
    char *hex = malloc(2 * len + 1);
    if (m == NULL || hex == NULL)
        fatal("out of memory");
    ipcprop_gen(77, sender, seq, len, m);
    if (len <= 4096) {
        to_hex(m, len, hex);
        expect(c, "{\"ev\":\"received\",\"data\":\"%s\",", hex);
    } else {
        to_hex(m, 8, hex);
        expect(c, "{\"ev\":\"received\",\"len\":%zu,\"crc\":%u,\"id\":\"%s\",", len,
               ipcprop_crc32c(m, len), hex);
    }
    free(m);
    free(hex);
}

static void bye(struct conn *c) {
    conn_send(c, "{\"op\":\"exit\"}");
    expect(c, "{\"ev\":\"bye\",");
    conn_free(c);
}

/* Drives PROGRAM (pipe_fixed, or the header's example) end to end; the two-sender case
 * only when it takes several senders. */
static void test_program(const char *program, int max_senders) {
    struct program p;

    if (max_senders >= 2) {
        /* Two senders; messages delivered in order, one larger than the pipe; the end of
         * stream once both senders left; the program exits 0. */
        start_program(program, "two", 2, &p);
        pf_send(p.senders[0], 0, 0, 100);
        expect(p.senders[0], "{\"ev\":\"sent\",\"seq\":0,");
        storm(p.senders[1]->pid);
        pf_send(p.senders[1], 1, 0, 4092);
        expect(p.senders[1], "{\"ev\":\"sent\",\"seq\":0,");
        /* 200000 bytes do not fit in the pipe: sent once the receiver reads. */
        pf_send(p.senders[0], 0, 1, 200000);
        storm(p.senders[0]->pid);
        say(p.receiver, "{\"op\":\"recv\",\"count\":3}");
        expect(p.receiver, "{\"ev\":\"receiving\",\"got\":0,");
        pf_received(p.receiver, 0, 0, 100);
        expect(p.receiver, "{\"ev\":\"receiving\",\"got\":1,");
        pf_received(p.receiver, 1, 0, 4092);
        expect(p.receiver, "{\"ev\":\"receiving\",\"got\":2,");
        storm(p.receiver->pid);
        pf_received(p.receiver, 0, 1, 200000);
        expect(p.senders[0], "{\"ev\":\"sent\",\"seq\":1,");
        /* A receiver blocked on the empty pipe through a storm. */
        say(p.receiver, "{\"op\":\"recv\",\"count\":1}");
        expect(p.receiver, "{\"ev\":\"receiving\",\"got\":3,");
        storm(p.receiver->pid);
        pf_send(p.senders[1], 1, 1, 0);
        expect(p.senders[1], "{\"ev\":\"sent\",\"seq\":1,");
        pf_received(p.receiver, 1, 1, 0);
        bye(p.senders[0]);
        bye(p.senders[1]);
        say(p.receiver, "{\"op\":\"recv\",\"count\":2}");
        expect(p.receiver, "{\"ev\":\"receiving\",\"got\":4,");
        expect(p.receiver, "{\"ev\":\"eos\",");
        bye(p.receiver);
        CHECK(reap(p.pid) == 0, "%s did not exit 0", program);
    }

    /* One sender: a message that waits for the receiver, which waits through a storm;
     * the end of stream. */
    start_program(program, "one", 1, &p);
    say(p.receiver, "{\"op\":\"recv\",\"count\":2}");
    expect(p.receiver, "{\"ev\":\"receiving\",\"got\":0,");
    storm(p.receiver->pid);
    pf_send(p.senders[0], 0, 0, 60000);
    expect(p.senders[0], "{\"ev\":\"sent\",\"seq\":0,");
    pf_received(p.receiver, 0, 0, 60000);
    expect(p.receiver, "{\"ev\":\"receiving\",\"got\":1,");
    bye(p.senders[0]);
    expect(p.receiver, "{\"ev\":\"eos\",");
    bye(p.receiver);
    CHECK(reap(p.pid) == 0, "%s did not exit 0", program);

    /* The receiver closes: a send fails with the receiver gone (EPIPE, not SIGPIPE). */
    start_program(program, "closed", 1, &p);
    say(p.receiver, "{\"op\":\"close\"}");
    expect(p.receiver, "{\"ev\":\"closed\",");
    pf_send(p.senders[0], 0, 0, 10);
    expect(p.senders[0],
           "{\"ev\":\"send_failed\",\"seq\":0,\"error\":\"write: %s\",\"disconnected\":true,",
           strerror(EPIPE));
    bye(p.senders[0]);
    bye(p.receiver);
    CHECK(reap(p.pid) == 0, "%s did not exit 0", program);
}

int main(int argc, char **argv) {
    if (!(argc == 2 || (argc == 5 && strcmp(argv[2], "--program") == 0))) {
        fprintf(stderr, "usage: %s DIR [--program PATH MAX_SENDERS]\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    /* A last resort: children see their harness go and exit by themselves. */
    alarm(600);
    if (argc == 5) {
        test_program(argv[3], atoi(argv[4]));
    } else {
        test_gen();
        test_crc();
        test_parse();
        test_env();
        test_env_recover();
        test_sender();
        test_receiver();
        test_connection_errors();
    }
    if (failures > 0) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("all C driver tests passed");
    return 0;
}
