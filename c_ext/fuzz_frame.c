/* fuzz_frame.c: libFuzzer target for the reader-link frame decoder and
 * encoder in frame.c (built by mk/c_ext.mk with clang -fsanitize=fuzzer,
 * address,undefined; not part of the _posio module).
 *
 * Beyond "no crash, no sanitizer report" it checks the decoder's promises:
 *  - feeding the input in arbitrary pieces, with an output buffer so small
 *    that the decoder must stop early, gives the same frames and counters as
 *    feeding it at once;
 *  - every payload re-encodes to a frame that occurs in the input;
 *  - the internal buffer never exceeds one frame and always starts at STX;
 *  - line_errors is the sum of the five error counters after every call;
 *  - output never runs past out_cap, every input byte is consumed;
 *  - flush() then empties the buffer, the same way for both runs, and what
 *    it delivers also occurs in the input;
 *  - encode(payload) decodes back to exactly that payload. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "posio.h"

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond,       \
                    __FILE__, __LINE__);                                   \
            abort();                                                       \
        }                                                                  \
    } while (0)

static int contains(const uint8_t *hay, size_t n, const uint8_t *needle,
                    size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

static void check_state(const posio_decoder *d)
{
    CHECK(d->len < POSIO_FRAME_MAX);
    if (d->len > 0)
        CHECK(d->buf[0] == POSIO_STX);
    if (d->len > 1)
        CHECK(d->buf[1] <= POSIO_PAYLOAD_MAX);
    CHECK(d->line_errors == d->noise_bytes + d->bad_length + d->bad_etx +
                               d->bad_checksum + d->truncated);
}

/* Tiny deterministic PRNG so a crash input replays the same chunking. */
static uint32_t next_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* One-shot decode into a buffer big enough for everything. */
    size_t cap = size + 2 * POSIO_OUT_RESERVE;
    uint8_t *all = malloc(cap);
    uint8_t *small = malloc(POSIO_OUT_RESERVE);
    uint8_t *frame = malloc(POSIO_FRAME_MAX);
    CHECK(all && small && frame);

    posio_decoder a;
    posio_decoder_init(&a);
    size_t all_len = 0, all_frames = 0;
    size_t used = posio_decoder_feed(&a, data, size, all, cap, &all_len,
                                     &all_frames);
    CHECK(used == size);
    CHECK(all_len <= cap);
    check_state(&a);
    CHECK(a.frames == all_frames);
    CHECK(a.noise_bytes <= size);

    /* Every delivered payload is a real frame somewhere in the input. */
    for (size_t pos = 0; pos < all_len;) {
        size_t len = all[pos];
        CHECK(len <= POSIO_PAYLOAD_MAX);
        CHECK(pos + 1 + len <= all_len);
        size_t flen = posio_encode_frame(all + pos + 1, len, frame,
                                         POSIO_FRAME_MAX);
        CHECK(flen == len + 4);
        CHECK(contains(data, size, frame, flen));
        pos += 1 + len;
    }

    /* Same input in random pieces, output drained whenever it fills. */
    uint32_t seed = 0x9E3779B9u ^ (uint32_t)size;
    for (size_t i = 0; i < size && i < 16; i++)
        seed = seed * 31u + data[i];
    if (seed == 0)
        seed = 1;
    posio_decoder b;
    posio_decoder_init(&b);
    size_t matched = 0, frames_b = 0;
    for (size_t off = 0; off < size;) {
        size_t piece = 1 + next_rand(&seed) % 64;
        if (piece > size - off)
            piece = size - off;
        size_t end = off + piece;
        while (off < end) {
            size_t out_len = 0, n_frames = 0;
            size_t took = posio_decoder_feed(&b, data + off, end - off, small,
                                             POSIO_OUT_RESERVE, &out_len,
                                             &n_frames);
            CHECK(took > 0); /* an empty output buffer always makes progress */
            CHECK(out_len <= POSIO_OUT_RESERVE);
            check_state(&b);
            CHECK(matched + out_len <= all_len);
            CHECK(memcmp(all + matched, small, out_len) == 0);
            matched += out_len;
            frames_b += n_frames;
            off += took;
        }
    }
    CHECK(matched == all_len);
    CHECK(frames_b == all_frames);
    CHECK(b.len == a.len && memcmp(b.buf, a.buf, a.len) == 0);
    CHECK(b.noise_bytes == a.noise_bytes && b.bad_length == a.bad_length &&
          b.bad_etx == a.bad_etx && b.bad_checksum == a.bad_checksum);

    /* End of traffic: flush both, compare, and check what surfaced. */
    size_t fa_len = 0, fa_frames = 0, fb_len = 0, fb_frames = 0;
    CHECK(posio_decoder_flush(&a, all, cap, &fa_len, &fa_frames) == 0);
    CHECK(posio_decoder_flush(&b, small, POSIO_OUT_RESERVE, &fb_len,
                              &fb_frames) == 0);
    CHECK(a.len == 0 && b.len == 0);
    check_state(&a);
    check_state(&b);
    CHECK(fa_len == fb_len && fa_frames == fb_frames);
    CHECK(memcmp(all, small, fa_len) == 0);
    CHECK(a.truncated == b.truncated && a.noise_bytes == b.noise_bytes);
    for (size_t pos = 0; pos < fa_len;) {
        size_t len = all[pos];
        size_t flen = posio_encode_frame(all + pos + 1, len, frame,
                                         POSIO_FRAME_MAX);
        CHECK(flen == len + 4 && contains(data, size, frame, flen));
        pos += 1 + len;
    }
    size_t full = POSIO_OUT_RESERVE - 1;
    CHECK(posio_decoder_flush(&a, small, POSIO_OUT_RESERVE, &full,
                              &fa_frames) == -1);

    /* Encoder round trip on the first <= 250 input bytes. */
    size_t plen = size < POSIO_PAYLOAD_MAX ? size : POSIO_PAYLOAD_MAX;
    size_t flen = posio_encode_frame(data, plen, frame, POSIO_FRAME_MAX);
    CHECK(flen == plen + 4);
    CHECK(posio_encode_frame(data, POSIO_PAYLOAD_MAX + 1, frame,
                             POSIO_FRAME_MAX) == 0);
    posio_decoder c;
    posio_decoder_init(&c);
    size_t c_len = 0, c_frames = 0;
    CHECK(posio_decoder_feed(&c, frame, flen, all, cap, &c_len, &c_frames) ==
          flen);
    CHECK(c_frames == 1 && c_len == plen + 1 && all[0] == plen);
    CHECK(memcmp(all + 1, data, plen) == 0);
    CHECK(c.len == 0 && c.noise_bytes == 0);

    free(frame);
    free(small);
    free(all);
    return 0;
}
