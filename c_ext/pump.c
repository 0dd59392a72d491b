/* pump.c: the byte pump for raw fds (serial ttys, ptys, pipes) -- write_all
 * and read_until with monotonic deadlines, an inter-byte gap and a cancel
 * fd.  cffi calls these with the GIL released, so they must not touch any
 * Python object; they block only in poll(). */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "posio.h"

#define NS_PER_MS 1000000LL
#define NEVER INT64_MAX

/* CLOCK_MONOTONIC: deadlines must not jump when NTP or the operator sets the
 * wall clock, which terminals do at every host sync. */
static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t deadline_after(int64_t start, int64_t ms)
{
    if (ms < 0)
        return NEVER;
    if (ms > (NEVER - start) / NS_PER_MS)
        return NEVER;
    return start + ms * NS_PER_MS;
}

/* poll() takes whole milliseconds: round up, so we never wake before the
 * deadline and spin through zero-timeout polls. */
static int poll_ms(int64_t until, int64_t now)
{
    if (until == NEVER)
        return -1;
    if (until <= now)
        return 0;
    int64_t ms = (until - now + NS_PER_MS - 1) / NS_PER_MS;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

int posio_write_all(int fd, const uint8_t *data, size_t n, size_t chunk,
                    int64_t deadline_ms, size_t *written)
{
    *written = 0;
    if (chunk == 0)
        return -EINVAL;
    int64_t end = deadline_after(now_ns(), deadline_ms);
    while (*written < n) {
        /* The deadline bounds waiting: while the fd takes data at once we
         * keep writing, and only a wait that outlives it fails. */
        struct pollfd p = {.fd = fd, .events = POLLOUT, .revents = 0};
        int rc = poll(&p, 1, poll_ms(end, now_ns()));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (rc == 0)
            return -ETIMEDOUT;
        if (p.revents & POLLNVAL)
            return -EBADF;
        /* POLLERR / POLLHUP: let write() report the real errno (EPIPE...). */
        size_t want = n - *written < chunk ? n - *written : chunk;
        ssize_t w = write(fd, data + *written, want);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return -errno;
        }
        *written += (size_t)w;
    }
    return 0;
}

int posio_read_until(int fd, uint8_t *out, size_t max_bytes,
                     int64_t inter_byte_ms, int64_t deadline_ms, int cancel_fd,
                     size_t *got)
{
    *got = 0;
    int64_t end = deadline_after(now_ns(), deadline_ms);
    int64_t gap_end = NEVER;
    int first = 1;
    while (*got < max_bytes) {
        int64_t now = now_ns();
        int64_t until = gap_end < end ? gap_end : end;
        /* A stream that never pauses must still stop at the deadline; the
         * first pass always polls once, so deadline 0 means "what is there
         * now". */
        if (!first && until <= now)
            return POSIO_READ_DONE;
        first = 0;
        struct pollfd p[2] = {
            {.fd = fd, .events = POLLIN, .revents = 0},
            {.fd = cancel_fd, .events = POLLIN, .revents = 0},
        };
        int rc = poll(p, cancel_fd >= 0 ? 2 : 1, poll_ms(until, now));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (cancel_fd >= 0 && p[1].revents) {
            if (p[1].revents & POLLNVAL)
                return -EBADF;
            /* Readable or hung up: either way the owner wants us gone. The
             * cancel byte is left in place so every waiter sharing the fd
             * sees it; its owner drains it before the next operation. */
            return POSIO_READ_CANCELLED;
        }
        if (rc == 0)
            return POSIO_READ_DONE;
        if (p[0].revents & POLLNVAL)
            return -EBADF;
        ssize_t r = read(fd, out + *got, max_bytes - *got);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return -errno;
        }
        if (r == 0)
            return POSIO_READ_EOF;
        *got += (size_t)r;
        if (inter_byte_ms >= 0)
            gap_end = deadline_after(now_ns(), inter_byte_ms);
    }
    return POSIO_READ_DONE;
}
