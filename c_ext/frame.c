/* frame.c: the card-reader link frame codec -- encoder and the incremental,
 * resynchronising decoder (STX LEN PAYLOAD ETX LRC, see FRAMING.md).
 *
 * Theory of operation: the decoder keeps at most one frame prefix in a fixed
 * buffer, always starting at an STX and always valid so far.  Each new byte is
 * appended and checked at its position (LEN <= 250, ETX after the payload,
 * LRC last).  When a check fails, only the failed frame's STX is dropped and
 * the rest of the buffer is rescanned from the next STX, because a frame that
 * lost its own bytes on the wire can hide the start of a good one inside it.
 * The rescan never needs bytes that are not in the buffer, so the decoder
 * never looks outside the caller's input.
 *
 * Most frames never enter the buffer: when it is empty and the input holds a
 * whole frame, frame_in_place() checks it where it lies.  The buffer only
 * carries a frame split across two feeds, and what a failed one swallowed. */
#include <string.h>

#include "posio.h"

enum check {
    PREFIX_OK,
    FRAME_DONE,
    BAD_LENGTH,
    BAD_ETX,
    BAD_CHECKSUM,
};

/* Checks buf[i], given that buf[0..i) is a valid prefix and buf[0] is STX. */
static enum check check_at(const posio_decoder *d, size_t i)
{
    if (i == 0)
        return PREFIX_OK;
    if (i == 1)
        return d->buf[1] > POSIO_PAYLOAD_MAX ? BAD_LENGTH : PREFIX_OK;
    size_t len = d->buf[1];
    if (i < 2 + len)
        return PREFIX_OK;
    if (i == 2 + len)
        return d->buf[i] == POSIO_ETX ? PREFIX_OK : BAD_ETX;
    /* i == 3 + len: the LRC covers LEN, the payload and ETX. */
    return posio_lrc(d->buf + 1, len + 2) == d->buf[i] ? FRAME_DONE
                                                       : BAD_CHECKSUM;
}

/* Drops buf[0..drop) and any noise up to the next STX in the buffer; returns
 * how much of what remains is already validated (the STX alone, if any). */
static size_t resync(posio_decoder *d, size_t drop)
{
    size_t next = drop;
    while (next < d->len && d->buf[next] != POSIO_STX)
        next++;
    d->noise_bytes += next - drop;
    memmove(d->buf, d->buf + next, d->len - next);
    d->len -= next;
    return d->len > 0 ? 1 : 0;
}

/* Validates buf[checked..len), delivering frames and rescanning after
 * failures until the buffer again holds only a valid incomplete prefix. */
static void settle(posio_decoder *d, size_t checked, uint8_t *out,
                   size_t *out_len, size_t *n_frames)
{
    while (checked < d->len) {
        size_t drop;
        switch (check_at(d, checked)) {
        case PREFIX_OK:
            checked++;
            continue;
        case FRAME_DONE: {
            size_t len = d->buf[1];
            out[*out_len] = (uint8_t)len;
            memcpy(out + *out_len + 1, d->buf + 2, len);
            *out_len += len + 1;
            (*n_frames)++;
            d->frames++;
            drop = checked + 1;
            break;
        }
        case BAD_LENGTH:
            d->bad_length++;
            drop = 1; /* resync right after the failed frame's STX */
            break;
        case BAD_ETX:
            d->bad_etx++;
            drop = 1;
            break;
        default: /* BAD_CHECKSUM */
            d->bad_checksum++;
            drop = 1;
            break;
        }
        checked = resync(d, drop);
    }
}

void posio_decoder_init(posio_decoder *d)
{
    memset(d, 0, sizeof *d);
}

/* Brings line_errors up to date: summed once per call rather than bumped
 * beside each of the nine counter updates, so none can be missed. */
static void tally(posio_decoder *d)
{
    d->line_errors = d->noise_bytes + d->bad_length + d->bad_etx +
                     d->bad_checksum + d->truncated;
}

/* The fast path for a candidate STX at in[0] while the buffer is empty and
 * the input holds its whole frame (have >= 4 + LEN): the same checks, in the
 * same order, as check_at() makes byte by byte, but made in place, and a good
 * payload goes straight to out without a trip through d->buf.  A failure
 * consumes only the STX, so the caller's hunt re-reads the bytes after it,
 * exactly as resync() would re-read them from the buffer.  Returns the bytes
 * consumed (1 after a failure, 4 + LEN after a good frame), or 0 -- nothing
 * counted -- when the frame is not all there and the byte-wise path must
 * buffer it. */
static size_t frame_in_place(posio_decoder *d, const uint8_t *in, size_t have,
                             uint8_t *out, size_t *out_len, size_t *n_frames)
{
    if (have < 2)
        return 0;
    size_t len = in[1];
    if (len > POSIO_PAYLOAD_MAX) {
        d->bad_length++;
        return 1;
    }
    if (have < 4 + len)
        return 0;
    if (in[2 + len] != POSIO_ETX) {
        d->bad_etx++;
        return 1;
    }
    /* The record (LEN and the payload) is the frame's in[1..2+len): copy it
     * out while summing the LRC, which covers it and the ETX.  Out has room
     * (the caller keeps POSIO_OUT_RESERVE free); a bad frame's copy there
     * is simply not counted. */
    if ((posio_copy_lrc(out + *out_len, in + 1, len + 1) ^ POSIO_ETX) !=
        in[3 + len]) {
        d->bad_checksum++;
        return 1;
    }
    *out_len += len + 1;
    (*n_frames)++;
    d->frames++;
    return 4 + len;
}

size_t posio_decoder_feed(posio_decoder *d, const uint8_t *in, size_t n,
                          uint8_t *out, size_t out_cap, size_t *out_len,
                          size_t *n_frames)
{
    size_t k = 0;
    while (k < n) {
        if (*out_len > out_cap || out_cap - *out_len < POSIO_OUT_RESERVE)
            break;
        if (d->len == 0) {
            /* Hunting: skip noise in one go rather than byte by byte (on a
             * clean link the next frame starts right here: no call). */
            if (in[k] != POSIO_STX) {
                const uint8_t *stx = memchr(in + k, POSIO_STX, n - k);
                size_t skip = stx ? (size_t)(stx - (in + k)) : n - k;
                d->noise_bytes += skip;
                k += skip;
                if (k == n)
                    break;
            }
            size_t used = frame_in_place(d, in + k, n - k, out, out_len,
                                         n_frames);
            if (used > 0) {
                k += used;
                continue;
            }
            d->buf[0] = POSIO_STX;
            d->len = 1;
            k++;
            continue;
        }
        if (d->len >= 2) {
            /* Inside the payload nothing can fail: copy the run at once. */
            size_t payload_end = 2 + (size_t)d->buf[1];
            if (d->len < payload_end) {
                size_t run = payload_end - d->len;
                if (run > n - k)
                    run = n - k;
                memcpy(d->buf + d->len, in + k, run);
                d->len += run;
                k += run;
                continue;
            }
        }
        d->buf[d->len++] = in[k++];
        settle(d, d->len - 1, out, out_len, n_frames);
    }
    tally(d);
    return k;
}

int posio_decoder_flush(posio_decoder *d, uint8_t *out, size_t out_cap,
                        size_t *out_len, size_t *n_frames)
{
    if (*out_len > out_cap || out_cap - *out_len < POSIO_OUT_RESERVE)
        return -1;
    /* Every candidate left is now known to be cut short; each one's STX
     * goes, and what it swallowed is rescanned like after any failure. */
    while (d->len > 0) {
        d->truncated++;
        settle(d, resync(d, 1), out, out_len, n_frames);
    }
    tally(d);
    return 0;
}

size_t posio_encode_frame(const uint8_t *payload, size_t n, uint8_t *out,
                          size_t out_cap)
{
    if (n > POSIO_PAYLOAD_MAX || out_cap < n + 4)
        return 0;
    out[0] = POSIO_STX;
    out[1] = (uint8_t)n;
    if (n > 0)
        memcpy(out + 2, payload, n);
    out[2 + n] = POSIO_ETX;
    out[3 + n] = posio_lrc(out + 1, n + 2);
    return n + 4;
}
