/* fuzz_raster.c: libFuzzer target for the printer raster code in raster.c
 * (threshold packing, Floyd-Steinberg dithering, GS v 0 band slicing); built
 * by mk/c_ext.mk with clang -fsanitize=fuzzer,address,undefined like
 * fuzz_frame.c, not part of the _posio module.
 *
 * Input: a 16-byte header, then the gray dots row by row (as many whole rows
 * as the input holds):
 *   [0..1]  width - 1 (little endian, mod 1024)
 *   [2..3]  threshold level (mod 257)
 *   [4..5]  band height (0 is out of range and must be refused)
 *   [6]     out_cap - need, signed: below zero the bands must not fit
 *   [7]     unused
 *   [8..15] a row count for a call the packed buffer does not back: its
 *           output need overflows or exceeds out_cap, so it must return 0
 *           without touching memory.
 * Every buffer is allocated at exactly its documented size, so ASan catches a
 * read or write past it.  Beyond "no crash, no sanitizer report" it checks:
 *  - threshold and dithering equal, bit for bit, the plain per-dot
 *    references below (signed indices, whole-image error plane, a bounds test
 *    per neighbour), and pad bits stay 0;
 *  - bands: out_cap too small -> 0 and out untouched; enough -> exactly the
 *    need, headers and rows parse back to the packed image, and nothing past
 *    the need is written. */
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

#define HEADER 16
#define MAX_WIDTH 1024
/* Filled into output buffers so a write where none belongs shows. */
#define CANARY 0xA5

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1); /* malloc(0) may be NULL */
    CHECK(p != NULL);
    return p;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Floor of x / 16 computed another way than raster.c: subtract the
 * non-negative remainder first, then the division is exact. */
static int32_t ref_floor16(int32_t x)
{
    int32_t r = ((x % 16) + 16) % 16;
    return (x - r) / 16;
}

static void set_dot(uint8_t *out, size_t stride, long x, long y)
{
    out[(size_t)y * stride + (size_t)x / 8] |= (uint8_t)(0x80u >> (x % 8));
}

static void ref_threshold(const uint8_t *gray, long w, long h, int level,
                          uint8_t *out, size_t stride)
{
    memset(out, 0, stride * (size_t)h);
    for (long y = 0; y < h; y++)
        for (long x = 0; x < w; x++)
            if (gray[y * w + x] < level)
                set_dot(out, stride, x, y);
}

/* The classic algorithm over a whole-image error plane: every neighbour is
 * bounds-tested, error pushed outside the image is dropped. */
static void ref_dither(const uint8_t *gray, long w, long h, uint8_t *out,
                       size_t stride)
{
    int32_t *e = calloc((size_t)(w * h) + 1, sizeof *e);
    CHECK(e != NULL);
    memset(out, 0, stride * (size_t)h);
    for (long y = 0; y < h; y++) {
        for (long x = 0; x < w; x++) {
            int32_t v = gray[y * w + x] + e[y * w + x];
            int32_t err = v < 128 ? v : v - 255;
            if (v < 128)
                set_dot(out, stride, x, y);
            int32_t right = ref_floor16(err * 7);
            int32_t down_left = ref_floor16(err * 3);
            int32_t down = ref_floor16(err * 5);
            if (x + 1 < w)
                e[y * w + x + 1] += right;
            if (y + 1 < h) {
                if (x > 0)
                    e[(y + 1) * w + x - 1] += down_left;
                e[(y + 1) * w + x] += down;
                if (x + 1 < w)
                    e[(y + 1) * w + x + 1] += err - right - down_left - down;
            }
        }
    }
    free(e);
}

static void check_pad_bits(const uint8_t *packed, long w, long h,
                           size_t stride)
{
    if (w % 8 == 0)
        return;
    uint8_t pad = (uint8_t)(0xFFu >> (w % 8));
    for (long y = 0; y < h; y++)
        CHECK((packed[(size_t)y * stride + stride - 1] & pad) == 0);
}

static int all_canary(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != CANARY)
            return 0;
    return 1;
}

/* Output bytes for h rows in bands of band_h, or 0 when that does not fit
 * in a size_t (the call must then be refused). */
static int band_need(size_t stride, size_t h, size_t band_h, size_t *need)
{
    size_t bands = h / band_h + (h % band_h != 0);
    size_t head, body;
    return !__builtin_mul_overflow(bands, (size_t)8, &head) &&
           !__builtin_mul_overflow(stride, h, &body) &&
           !__builtin_add_overflow(head, body, need);
}

static void check_bands(const uint8_t *packed, size_t stride, size_t h,
                        size_t band_h, long slack, uint64_t wild_h)
{
    size_t need = 0;
    if (band_h == 0 || band_h > 0xFFFF) {
        uint8_t out[8];
        CHECK(posio_raster_bands(packed, stride, h, band_h, out,
                                 sizeof out) == 0);
        return;
    }
    CHECK(band_need(stride, h, band_h, &need));
    size_t cap = slack < 0 && (size_t)-slack > need ? 0 : need + slack;
    uint8_t *out = xmalloc(cap);
    memset(out, CANARY, cap);
    size_t got = posio_raster_bands(packed, stride, h, band_h, out, cap);
    if (cap < need) {
        CHECK(got == 0);
        CHECK(all_canary(out, cap));
    } else {
        CHECK(got == need);
        CHECK(all_canary(out + need, cap - need));
        size_t pos = 0;
        for (size_t y0 = 0; y0 < h; y0 += band_h) {
            size_t rows = h - y0 < band_h ? h - y0 : band_h;
            const uint8_t head[8] = {0x1D, 0x76, 0x30, 0x00,
                                     (uint8_t)stride, (uint8_t)(stride >> 8),
                                     (uint8_t)rows, (uint8_t)(rows >> 8)};
            CHECK(memcmp(out + pos, head, 8) == 0);
            CHECK(memcmp(out + pos + 8, packed + y0 * stride,
                         rows * stride) == 0);
            pos += 8 + rows * stride;
        }
        CHECK(pos == need);
    }
    /* A row count the packed buffer does not back: when its need overflows
     * or exceeds cap the function must refuse before reading or writing. */
    size_t wild_need;
    if (wild_h > h && (!band_need(stride, (size_t)wild_h, band_h,
                                  &wild_need) || wild_need > cap)) {
        memset(out, CANARY, cap);
        CHECK(posio_raster_bands(packed, stride, (size_t)wild_h, band_h, out,
                                 cap) == 0);
        CHECK(all_canary(out, cap));
    }
    /* Wider than GS v 0 can say: refused. */
    CHECK(posio_raster_bands(packed, 0x10000, h, band_h, out, cap) == 0);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER)
        return 0;
    long w = 1 + (long)(le(data, 2) % MAX_WIDTH);
    int level = (int)(le(data + 2, 2) % 257);
    size_t band_h = (size_t)le(data + 4, 2);
    long slack = (int8_t)data[6];
    uint64_t wild_h = le(data + 8, 8);
    long h = (long)((size - HEADER) / (size_t)w);
    size_t stride = ((size_t)w + 7) / 8;
    size_t n_dots = (size_t)(w * h), n_packed = stride * (size_t)h;

    /* Exact-size copies: the fuzzer's own buffer may be larger. */
    uint8_t *gray = xmalloc(n_dots);
    memcpy(gray, data + HEADER, n_dots);
    uint8_t *packed = xmalloc(n_packed);
    uint8_t *expect = xmalloc(n_packed);
    int32_t *scratch = xmalloc(2 * ((size_t)w + 2) * sizeof *scratch);

    memset(packed, CANARY, n_packed);
    posio_threshold(gray, (size_t)w, (size_t)h, level, packed);
    ref_threshold(gray, w, h, level, expect, stride);
    CHECK(memcmp(packed, expect, n_packed) == 0);

    memset(packed, CANARY, n_packed);
    posio_floyd_steinberg(gray, (size_t)w, (size_t)h, packed, scratch);
    ref_dither(gray, w, h, expect, stride);
    CHECK(memcmp(packed, expect, n_packed) == 0);
    check_pad_bits(packed, w, h, stride);

    check_bands(packed, stride, (size_t)h, band_h, slack, wild_h);

    free(scratch);
    free(expect);
    free(packed);
    free(gray);
    return 0;
}
