/* raster.c: thermal-printer raster work -- grayscale to 1-bit packing by
 * fixed threshold or Floyd-Steinberg error diffusion, and slicing packed rows
 * into ESC/POS "GS v 0" band commands.  Packing: rows of ceil(w/8) bytes,
 * MSB = leftmost dot, 1 = black (burn), 0 = white; pad bits are 0. */
#include <string.h>

#include "posio.h"

void posio_threshold(const uint8_t *gray, size_t w, size_t h, int level,
                     uint8_t *out)
{
    size_t stride = (w + 7) / 8;
    for (size_t y = 0; y < h; y++) {
        const uint8_t *row = gray + y * w;
        uint8_t *dst = out + y * stride;
        size_t x = 0;
        /* Whole bytes first: no per-dot bounds test in the hot loop. */
        for (size_t bx = 0; bx < w / 8; bx++, x += 8) {
            unsigned acc = 0;
            for (int b = 0; b < 8; b++)
                acc = (acc << 1) | (row[x + b] < level);
            dst[bx] = (uint8_t)acc;
        }
        if (x < w) {
            unsigned acc = 0;
            int b = 0;
            for (; x < w; x++, b++)
                acc = (acc << 1) | (row[x] < level);
            dst[w / 8] = (uint8_t)(acc << (8 - b));
        }
    }
}

/* Floor division by 16.  C's "/" truncates toward zero and ">>" on negative
 * values is implementation-defined; Python's "//" floors, and the twin in
 * reference.py must agree bit for bit. */
static inline int32_t floor_div16(int32_t x)
{
    return x >= 0 ? x / 16 : -((-x + 15) / 16);
}

void posio_floyd_steinberg(const uint8_t *gray, size_t w, size_t h,
                           uint8_t *out, int32_t *scratch)
{
    size_t stride = (w + 7) / 8;
    /* Two error rows of w + 2 cells: cell x + 1 belongs to dot x, and cells
     * 0 and w + 1 are guards where errors pushed past the left or right edge
     * land and are dropped, as in the classic algorithm, without a branch
     * per dot.  Indices stay >= 0 (x is unsigned: "x - 1" at x = 0 would
     * point below the array, which is undefined), as in reference.py. */
    int32_t *cur = scratch;
    int32_t *nxt = scratch + (w + 2);
    memset(cur, 0, (w + 2) * sizeof *cur);
    memset(out, 0, stride * h);
    for (size_t y = 0; y < h; y++) {
        const uint8_t *row = gray + y * w;
        uint8_t *dst = out + y * stride;
        memset(nxt, 0, (w + 2) * sizeof *nxt);
        for (size_t x = 0; x < w; x++) {
            int32_t v = (int32_t)row[x] + cur[x + 1];
            int32_t err;
            if (v < 128) {
                dst[x >> 3] |= (uint8_t)(0x80u >> (x & 7));
                err = v;
            } else {
                err = v - 255;
            }
            int32_t right = floor_div16(err * 7);
            int32_t down_left = floor_div16(err * 3);
            int32_t down = floor_div16(err * 5);
            /* The remainder goes down-right so no error is created or lost
             * by rounding. */
            int32_t down_right = err - right - down_left - down;
            cur[x + 2] += right;
            nxt[x] += down_left;
            nxt[x + 1] += down;
            nxt[x + 2] += down_right;
        }
        int32_t *t = cur;
        cur = nxt;
        nxt = t;
    }
}

size_t posio_raster_bands(const uint8_t *packed, size_t stride, size_t h,
                          size_t band_h, uint8_t *out, size_t out_cap)
{
    if (band_h == 0 || band_h > 0xFFFF || stride > 0xFFFF)
        return 0;
    /* Checked arithmetic: with a huge h the need must not wrap around to a
     * small number that out_cap then "holds". */
    size_t bands = h / band_h + (h % band_h != 0);
    size_t head, body, need;
    if (__builtin_mul_overflow(bands, (size_t)8, &head) ||
        __builtin_mul_overflow(stride, h, &body) ||
        __builtin_add_overflow(head, body, &need) || out_cap < need)
        return 0;
    size_t pos = 0;
    for (size_t y0 = 0; y0 < h; y0 += band_h) {
        size_t rows = h - y0 < band_h ? h - y0 : band_h;
        /* GS v 0 m xL xH yL yH: m = 0 (normal density), x in bytes. */
        out[pos++] = 0x1D;
        out[pos++] = 0x76;
        out[pos++] = 0x30;
        out[pos++] = 0x00;
        out[pos++] = (uint8_t)(stride & 0xFF);
        out[pos++] = (uint8_t)(stride >> 8);
        out[pos++] = (uint8_t)(rows & 0xFF);
        out[pos++] = (uint8_t)(rows >> 8);
        memcpy(out + pos, packed + y0 * stride, rows * stride);
        pos += rows * stride;
    }
    return pos;
}
