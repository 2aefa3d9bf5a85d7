/*
 * pipe_fixed.c: a length-framed pipe channel under the ipcprop driver protocol.
 *
 * One pipe; IPCPROP_SENDERS forked senders write frames (a 4-byte little-endian length,
 * then the message) to it and one forked receiver reads them. It is "fixed" because it
 * does what such a channel needs and naive ones forget:
 *
 * - every process closes the ends it does not use (the parent both), so the receiver
 *   sees end of file once every sender is gone, and senders see EPIPE once the receiver
 *   is gone. The parent closes its ends before any role connects to the harness (the
 *   roles wait at a gate until then): a parent that still held the read end when the
 *   harness told the receiver to close would let a send "succeed" into a pipe nobody
 *   reads, and hold back the end of stream (the tests caught the first under load);
 * - SIGPIPE is ignored: a write to a pipe without a reader fails with EPIPE (the send
 *   reports the receiver gone) instead of killing the sender;
 * - reads and writes loop over short counts and EINTR (the harness's SIGURG storms);
 * - a frame of at most PIPE_BUF (4096) bytes, its header included, goes out in one
 *   write(2), which the kernel never interleaves with another writer's and never splits:
 *   several senders may share the pipe for messages of at most 4092 bytes (declared as
 *   `shared_max_len`); a longer frame may be split, so with one sender only;
 * - end of file between frames is the end of stream, end of file inside a frame is a
 *   message cut off (its sender died while writing it).
 *
 * Build: cc -std=c99 -D_GNU_SOURCE -Wall -Wextra -O2 pipe_fixed.c ipcprop_driver.c \
 *            -o pipe_fixed
 * Run:   ipcprop check --exec ./pipe_fixed   (capabilities in pipe_fixed.ipcprop.toml)
 */
#include "ipcprop_driver.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* The longest message the receiver accepts: a longer length is a corrupt stream. The
 * capabilities file declares the same. */
#define MAX_MESSAGE (1024 * 1024)

/* One process's end of the pipe, and the buffer it frames or unframes messages in. */
struct end {
    int fd;
    uint8_t *buf;
    size_t cap;
};

static int reserve(struct end *e, size_t n) {
    if (n <= e->cap && e->buf != NULL)
        return 0;
    uint8_t *bigger = realloc(e->buf, n > 0 ? n : 1);
    if (bigger == NULL)
        return -1;
    e->buf = bigger;
    e->cap = n;
    return 0;
}

/* Writes all of p[0..n), retrying EINTR and short writes. 0, or -1 with errno. */
static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads up to n bytes into p, retrying EINTR and short reads, stopping at end of file.
 * The number of bytes read, or -1 with errno. */
static ssize_t read_full(int fd, uint8_t *p, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = read(fd, p + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

static int send_frame(void *ctx, const uint8_t *msg, size_t len, char *err, size_t errlen) {
    struct end *e = ctx;
    if (len > MAX_MESSAGE) {
        snprintf(err, errlen, "a message of %zu bytes (this channel carries at most %d)", len,
                 MAX_MESSAGE);
        return IPCPROP_FAILED;
    }
    if (reserve(e, 4 + len) != 0) {
        snprintf(err, errlen, "out of memory");
        return IPCPROP_FAILED;
    }
    /* Header and message in one buffer: one write(2) for a frame of at most PIPE_BUF. */
    for (int i = 0; i < 4; i++)
        e->buf[i] = (uint8_t)(len >> (8 * i));
    if (len > 0)
        memcpy(e->buf + 4, msg, len);
    if (write_all(e->fd, e->buf, 4 + len) == 0)
        return 0;
    int saved = errno;
    snprintf(err, errlen, "write: %s", strerror(saved));
    return saved == EPIPE ? IPCPROP_DISCONNECTED : IPCPROP_FAILED;
}

static int recv_frame(void *ctx, const uint8_t **msg, size_t *len, char *err, size_t errlen) {
    struct end *e = ctx;
    uint8_t head[4];
    ssize_t r = read_full(e->fd, head, sizeof head);
    if (r < 0) {
        snprintf(err, errlen, "read: %s", strerror(errno));
        return IPCPROP_FAILED;
    }
    if (r == 0)
        return IPCPROP_EOS;
    if (r < 4) {
        snprintf(err, errlen, "end of file after %zd bytes of a frame's length", r);
        return IPCPROP_CUT_OFF;
    }
    size_t n = (size_t)head[0] | (size_t)head[1] << 8 | (size_t)head[2] << 16 |
               (size_t)head[3] << 24;
    if (n > MAX_MESSAGE) {
        snprintf(err, errlen, "a frame of %zu bytes (at most %d): a corrupt stream", n,
                 MAX_MESSAGE);
        return IPCPROP_FAILED;
    }
    if (reserve(e, n) != 0) {
        snprintf(err, errlen, "out of memory");
        return IPCPROP_FAILED;
    }
    r = read_full(e->fd, e->buf, n);
    if (r < 0) {
        snprintf(err, errlen, "read: %s", strerror(errno));
        return IPCPROP_FAILED;
    }
    if ((size_t)r < n) {
        snprintf(err, errlen, "end of file after %zd of a frame's %zu bytes", r, n);
        return IPCPROP_CUT_OFF;
    }
    *msg = e->buf;
    *len = n;
    return 0;
}

static void close_end(void *ctx) {
    struct end *e = ctx;
    close(e->fd);
    e->fd = -1;
}

/* In a forked child: wait until the parent closed its ends of the pipe (it closes the
 * gate's write end after them: end of file), then serve one role on `fd` and exit. */
static void run_role(int sender, int fd, int gate) {
    struct end e = {fd, NULL, 0};
    uint8_t byte;
    ssize_t r;
    while ((r = read(gate, &byte, 1)) < 0 && errno == EINTR) {
    }
    close(gate);
    int rc = sender >= 0 ? ipcprop_serve_sender(sender, send_frame, close_end, &e)
                         : ipcprop_serve_receiver(recv_frame, close_end, &e);
    free(e.buf);
    _exit(rc == 0 ? 0 : 1);
}

int main(void) {
    struct ipcprop_env env;
    int p[2], gate[2];
    pid_t *kids;
    uint32_t started = 0, n;

    if (ipcprop_env(&env) != 0)
        return 2;
    if (env.role != IPCPROP_ROLE_ANY) {
        fprintf(stderr, "pipe_fixed: a pipe is shared across fork: run it with --exec, not "
                        "--exec-sender/--exec-receiver\n");
        return 2;
    }
    n = env.senders;
    /* Inherited by every role: EPIPE instead of death by SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    kids = calloc((size_t)n + 1, sizeof *kids);
    if (kids == NULL || pipe2(p, O_CLOEXEC) != 0 || pipe2(gate, O_CLOEXEC) != 0) {
        perror("pipe_fixed: setup");
        return 1;
    }
    fflush(NULL);
    /* The receiver first, then the senders: each child closes the end it does not use. */
    for (uint32_t i = 0; i <= n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("pipe_fixed: fork");
            break;
        }
        if (pid == 0) {
            close(gate[1]);
            if (i == 0) {
                close(p[1]);
                run_role(-1, p[0], gate[0]);
            } else {
                close(p[0]);
                run_role((int)(i - 1), p[1], gate[0]);
            }
        }
        kids[started++] = pid;
    }
    close(p[0]);
    close(p[1]);
    /* Only now may the roles say hello. */
    close(gate[1]);
    close(gate[0]);
    for (uint32_t i = 0; i < started; i++)
        while (waitpid(kids[i], NULL, 0) < 0 && errno == EINTR) {
        }
    free(kids);
    return started == n + 1 ? 0 : 1;
}
