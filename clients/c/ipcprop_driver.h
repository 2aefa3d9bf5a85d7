/*
 * ipcprop_driver.h: a C client of the ipcprop driver protocol, version 1
 * (docs/PROTOCOL.md), for `ipcprop check --exec CMD`.
 *
 * C99 and POSIX, nothing beyond libc. Build it with the program under test:
 *
 *     cc -std=c99 -D_GNU_SOURCE -Wall -Wextra -O2 prog.c ipcprop_driver.c -o prog
 *
 * A role process (a sender or the receiver) calls one serve function, which connects to
 * the harness (IPCPROP_CONTROL), says hello, and turns the harness's commands into calls
 * of the program's callbacks, writing the events the protocol asks for around them. It
 * returns 0 when the harness said `exit` (after `bye`); the role should then exit with
 * status 0. It returns -1, with a message on standard error, when it could not connect
 * or the harness sent a line it does not understand. If the control connection ends
 * before `exit` (the harness is gone), the process exits at once with `_exit(3)`, as the
 * protocol requires.
 *
 * Signals: both serve functions install a handler that does nothing for SIGURG, WITHOUT
 * SA_RESTART, so that the harness's SIGURG storms interrupt the role's blocking system
 * calls with EINTR, as real signals do in a real program. The callbacks' code must retry
 * EINTR (and short reads and writes). The control socket is written with MSG_NOSIGNAL, so
 * the library never changes SIGPIPE's disposition; a program writing a pipe or a socket
 * usually wants `signal(SIGPIPE, SIG_IGN)` to see EPIPE instead of dying.
 *
 * Every line is written with one write loop of the whole line, its `t` taken from
 * clock_gettime(CLOCK_MONOTONIC) just before. The library keeps no mutable global state
 * (the SIGURG handler is the one process-wide change); it is not meant to be used from
 * several threads of one process at once (a role is a process).
 *
 * A complete example: one sender and one receiver, forked, over a pipe with a 4-byte
 * length prefix (clients/c/pipe_fixed.c is the full version, with several senders).
 * Run it with `ipcprop check --exec ./example --max-len 65536`.
 *
 * EXAMPLE BEGIN
#include "ipcprop_driver.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct end { int fd; uint8_t buf[65536]; };

// Writes or reads all n bytes, retrying EINTR and short counts. Returns n, or fewer
// at end of file (reads), or -1 with errno.
static ssize_t full(int fd, uint8_t *p, size_t n, int writing) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = writing ? write(fd, p + done, n - done) : read(fd, p + done, n - done);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

static int send_msg(void *ctx, const uint8_t *msg, size_t len, char *err, size_t errlen) {
    struct end *e = ctx;
    uint8_t *frame = malloc(4 + len);
    if (!frame) { snprintf(err, errlen, "out of memory"); return IPCPROP_FAILED; }
    for (int i = 0; i < 4; i++) frame[i] = (uint8_t)(len >> (8 * i));
    if (len) memcpy(frame + 4, msg, len);
    ssize_t r = full(e->fd, frame, 4 + len, 1);
    int saved = errno;
    free(frame);
    if (r >= 0) return 0;
    snprintf(err, errlen, "write: %s", strerror(saved));
    return saved == EPIPE ? IPCPROP_DISCONNECTED : IPCPROP_FAILED;
}

static int recv_msg(void *ctx, const uint8_t **msg, size_t *len, char *err, size_t errlen) {
    struct end *e = ctx;
    uint8_t h[4];
    ssize_t r = full(e->fd, h, 4, 0);
    if (r == 0) return IPCPROP_EOS;
    if (r < 0) { snprintf(err, errlen, "read: %s", strerror(errno)); return IPCPROP_FAILED; }
    if (r < 4) { snprintf(err, errlen, "end of file in a frame's length"); return IPCPROP_CUT_OFF; }
    size_t n = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
    if (n > sizeof e->buf) { snprintf(err, errlen, "frame of %zu bytes", n); return IPCPROP_FAILED; }
    r = full(e->fd, e->buf, n, 0);
    if (r < 0) { snprintf(err, errlen, "read: %s", strerror(errno)); return IPCPROP_FAILED; }
    if ((size_t)r < n) { snprintf(err, errlen, "end of file in a frame"); return IPCPROP_CUT_OFF; }
    *msg = e->buf;
    *len = n;
    return 0;
}

static void close_end(void *ctx) {
    struct end *e = ctx;
    close(e->fd);
}

int main(void) {
    struct ipcprop_env env;
    if (ipcprop_env(&env) != 0) return 2;
    if (env.senders != 1) { fprintf(stderr, "one sender only\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    static struct end e;
    int p[2];
    if (pipe(p) != 0) return 1;
    // The receiver first; the parent closes the read end before the sender exists, so
    // that once the receiver closes it, a send fails (EPIPE) instead of filling a pipe
    // that the parent still holds open.
    pid_t kids[2];
    for (int role = 0; role < 2; role++) {
        kids[role] = fork();
        if (kids[role] < 0) return 1;
        if (kids[role] == 0) {
            close(p[role == 0 ? 1 : 0]);
            e.fd = p[role == 0 ? 0 : 1];
            int rc = role == 0 ? ipcprop_serve_receiver(recv_msg, close_end, &e)
                               : ipcprop_serve_sender(0, send_msg, close_end, &e);
            _exit(rc == 0 ? 0 : 1);
        }
        close(p[role]);
    }
    for (int role = 0; role < 2; role++)
        while (waitpid(kids[role], NULL, 0) < 0 && errno == EINTR) {}
    return 0;
}
 * EXAMPLE END
 */
#ifndef IPCPROP_DRIVER_H
#define IPCPROP_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The protocol version this client speaks. */
#define IPCPROP_PROTOCOL_VERSION 1

/* Return codes of the callbacks (0 means success). */
#define IPCPROP_DISCONNECTED 1 /* send: the receiver is gone (EPIPE, a closed socket) */
#define IPCPROP_FAILED 2       /* send or recv: any other error */
#define IPCPROP_EOS 3          /* recv: every sender is gone and everything was received */
#define IPCPROP_CUT_OFF 4      /* recv: the stream ended inside a message */

/* The longest line the harness may send this client (it never asks for `data`): 64 KiB,
 * not counting the ending newline. */
#define IPCPROP_MAX_LINE 65536

/* The longest error text a callback can report (the `err` buffer's size). */
#define IPCPROP_ERR_LEN 512

/* Messages of at most this many bytes are reported as `data` (hex), longer ones by
 * `len`, `crc` and `id`. */
#define IPCPROP_DATA_MAX 4096

enum ipcprop_role {
    IPCPROP_ROLE_ANY = 0, /* one-program mode: IPCPROP_ROLE is not set */
    IPCPROP_ROLE_SENDER = 1,
    IPCPROP_ROLE_RECEIVER = 2
};

/* What the harness put in the environment. The strings point into the environment. */
struct ipcprop_env {
    uint32_t senders;       /* IPCPROP_SENDERS: how many sender roles (>= 1) */
    const char *dir;        /* IPCPROP_DIR: this case's directory */
    const char *case_name;  /* IPCPROP_CASE: a unique name for this case */
    const char *control;    /* IPCPROP_CONTROL: the control socket's path */
    enum ipcprop_role role; /* IPCPROP_ROLE, two-program mode only */
    int index;              /* IPCPROP_INDEX (a sender in two-program mode), else -1 */
    int recover;            /* IPCPROP_RECOVER: 1 in the recovery run of a persistent
                             * program (PROTOCOL.md section 9: start the receiver only,
                             * open the storage the killed run left, never create it
                             * afresh), 0 when unset, empty or "0" */
};

/* Reads the IPCPROP_* variables into *out. Returns 0, or -1 with a message on standard
 * error naming the variable that is missing or invalid (IPCPROP_PROTOCOL other than 1,
 * IPCPROP_SENDERS not a number >= 1, IPCPROP_CONTROL, IPCPROP_DIR or IPCPROP_CASE unset or
 * empty, IPCPROP_ROLE not `sender` or `receiver`, IPCPROP_INDEX missing for a sender or
 * not in 0..IPCPROP_SENDERS-1, IPCPROP_RECOVER set to anything but `1`, `0` or empty). */
int ipcprop_env(struct ipcprop_env *out);

/* Writes message `seq` of sender `sender` with length `len` under `seed` (PROTOCOL.md
 * section 5) to out[0..len). */
void ipcprop_gen(uint64_t seed, uint32_t sender, uint32_t seq, size_t len, uint8_t *out);

/* CRC-32C (Castagnoli) of p[0..n): ipcprop_crc32c("123456789", 9) == 3808858755. */
uint32_t ipcprop_crc32c(const uint8_t *p, size_t n);

/* Sends one message on the channel. Returns 0 once it was sent (from then on it must be
 * delivered), IPCPROP_DISCONNECTED if the receiver is gone, IPCPROP_FAILED on any other
 * error; on an error, writes a NUL-terminated description to err[0..errlen). msg is valid
 * only during the call. Must retry EINTR. */
typedef int (*ipcprop_send_fn)(void *ctx, const uint8_t *msg, size_t len, char *err,
                               size_t errlen);

/* Receives one message. Returns 0 with *msg and *len set (a buffer the callback owns; it
 * must stay valid until the next call of any callback; *msg may be NULL when *len is 0),
 * IPCPROP_EOS when every sender is gone and everything was received, IPCPROP_CUT_OFF when
 * the stream ended inside a message, IPCPROP_FAILED on any other error; with
 * IPCPROP_CUT_OFF and IPCPROP_FAILED, writes a NUL-terminated description to
 * err[0..errlen). Must retry EINTR. */
typedef int (*ipcprop_recv_fn)(void *ctx, const uint8_t **msg, size_t *len, char *err,
                               size_t errlen);

/* Closes the role's end of the channel. The serve functions call it at most once. */
typedef void (*ipcprop_close_fn)(void *ctx);

/* Serves sender `index` (0 to IPCPROP_SENDERS-1): connects to IPCPROP_CONTROL, says
 * hello with its own pid, then for each `send` command generates the message, writes
 * `sending`, calls send, and writes `sent` or `send_failed` (`disconnected` when send
 * returned IPCPROP_DISCONNECTED, `error` its text). On `exit`: calls close_fn (if not NULL),
 * writes `bye`, closes the control socket and returns 0. Returns -1 (message on standard
 * error) if it cannot connect, on a line it does not understand, or if it runs out of
 * memory; exits with _exit(3) if the control connection ends before `exit`. */
int ipcprop_serve_sender(int index, ipcprop_send_fn send, ipcprop_close_fn close_fn,
                         void *ctx);

/* Serves the receiver, as ipcprop_serve_sender does a sender: for `recv` with `count`,
 * up to `count` times writes `receiving` (with `got`, the messages received so far), calls
 * recv, and writes `received` (a message of at most IPCPROP_DATA_MAX bytes as `data` in
 * hex, a longer one as `len`, `crc` and `id`), or `eos`, `cut_off` or `recv_failed`, which
 * end the command. On `close`: calls close_fn (if not NULL and not yet called) and writes
 * `closed`. On `exit`: calls close_fn (if not NULL and not yet called), writes `bye`,
 * closes the control socket and returns 0. */
int ipcprop_serve_receiver(ipcprop_recv_fn recv, ipcprop_close_fn close_fn, void *ctx);

/* Lower level: one command line of the harness, parsed. Exposed for programs that run
 * their own loop, and for tests. */
enum ipcprop_op {
    IPCPROP_OP_SEND = 1,
    IPCPROP_OP_RECV = 2,
    IPCPROP_OP_CLOSE = 3,
    IPCPROP_OP_EXIT = 4
};

struct ipcprop_command {
    enum ipcprop_op op;
    /* op == IPCPROP_OP_SEND */
    uint32_t seq;
    uint32_t sender;
    uint64_t len;
    uint64_t seed;
    /* op == IPCPROP_OP_RECV */
    uint64_t count;
};

/* Parses one line (without its newline; n bytes, need not be NUL-terminated): a flat JSON
 * object with `op` and the fields its op requires (send: `seq`, `sender`, `len`
 * non-negative integers, `seq` and `sender` below 2^32, `seed` a string of decimal digits
 * below 2^64; recv: `count`), other fields ignored whatever their value. Returns 0, or -1
 * with a NUL-terminated description in err[0..errlen) for a line that is not such an
 * object (bad JSON, trailing bytes, an unknown op, a missing or mistyped field). */
int ipcprop_parse_command(const char *line, size_t n, struct ipcprop_command *out, char *err,
                          size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* IPCPROP_DRIVER_H */
