/* posio.h: the whole C API of the _posio extension (reader-link frame codec,
 * LRC / CRC-16, printer raster packing, fd byte pump).  The cffi builder
 * (build_posio.py) and the libFuzzer targets (fuzz_*.c) all include it;
 * the cdef in build_posio.py must stay in step with it. */
#ifndef POSIO_H
#define POSIO_H

#include <stddef.h>
#include <stdint.h>

/* ---- reader link framing: STX LEN PAYLOAD ETX LRC (see FRAMING.md) ---- */
#define POSIO_STX 0x02
#define POSIO_ETX 0x03
#define POSIO_PAYLOAD_MAX 250
/* Largest frame: STX + LEN + 250 payload bytes + ETX + LRC. */
#define POSIO_FRAME_MAX (POSIO_PAYLOAD_MAX + 4)
/* Output space posio_decoder_feed keeps free before it consumes a byte: one
 * byte can complete every frame still held in the 254-byte buffer, and their
 * records (1 length byte + payload) add up to less than POSIO_FRAME_MAX. */
#define POSIO_OUT_RESERVE POSIO_FRAME_MAX

typedef struct {
    /* buf[0..len) is a valid, incomplete frame prefix starting with STX
     * (len == 0 while hunting for STX); len < POSIO_FRAME_MAX always. */
    uint8_t buf[POSIO_FRAME_MAX];
    size_t len;
    uint64_t frames;       /* good frames delivered */
    uint64_t noise_bytes;  /* bytes skipped while hunting for STX */
    uint64_t bad_length;   /* LEN > 250 */
    uint64_t bad_etx;      /* byte after the payload was not ETX */
    uint64_t bad_checksum; /* LRC mismatch */
    uint64_t truncated;    /* partial frames given up by flush */
    /* The sum of the five counters above, brought up to date before feed and
     * flush return: one field to read to learn whether any of them moved. */
    uint64_t line_errors;
} posio_decoder;

void posio_decoder_init(posio_decoder *d);
/* Consume in[0..n).  Each good payload is appended to out as a record
 * (1 length byte, then the payload: the frame without STX, ETX and LRC) at
 * out[*out_len]; *out_len and *n_frames are advanced.  out[*out_len..out_cap)
 * is scratch: a frame that fails its LRC may have been copied there.  Stops early, returning how many input bytes it consumed,
 * once fewer than POSIO_OUT_RESERVE bytes of out are free; the caller then
 * drains out and feeds the rest. */
size_t posio_decoder_feed(posio_decoder *d, const uint8_t *in, size_t n,
                          uint8_t *out, size_t out_cap, size_t *out_len,
                          size_t *n_frames);
/* The link went quiet: gives up the partial frame (counted in truncated) and
 * rescans what it held, delivering any complete frame found there, until the
 * buffer is empty.  Needs POSIO_OUT_RESERVE free bytes of out; returns 0, or
 * -1 (nothing done) without them. */
int posio_decoder_flush(posio_decoder *d, uint8_t *out, size_t out_cap,
                        size_t *out_len, size_t *n_frames);
/* Writes the frame for payload[0..n) to out; returns its length (n + 4), or
 * 0 if n > POSIO_PAYLOAD_MAX or out_cap is too small. */
size_t posio_encode_frame(const uint8_t *payload, size_t n, uint8_t *out,
                          size_t out_cap);

/* ---- checksums ---- */
uint8_t posio_lrc(const uint8_t *data, size_t n);
/* Copies src[0..n) to dst[0..n) (not overlapping) and returns their LRC. */
uint8_t posio_copy_lrc(uint8_t *dst, const uint8_t *src, size_t n);
uint16_t posio_crc16_ccitt(const uint8_t *data, size_t n, uint16_t init);

/* ---- printer raster: 1 bit per dot, MSB first, 1 = black ---- */
/* out must hold ceil(w/8) * h bytes. */
void posio_threshold(const uint8_t *gray, size_t w, size_t h, int level,
                     uint8_t *out);
/* scratch must hold 2 * (w + 2) int32_t; out ceil(w/8) * h bytes. */
void posio_floyd_steinberg(const uint8_t *gray, size_t w, size_t h,
                           uint8_t *out, int32_t *scratch);
/* Packs packed[0..stride*h) into GS v 0 commands of up to band_h rows each,
 * back to back; returns bytes written, or 0 if out_cap is too small or an
 * argument is out of range (stride or band_h > 65535, band_h == 0). */
size_t posio_raster_bands(const uint8_t *packed, size_t stride, size_t h,
                          size_t band_h, uint8_t *out, size_t out_cap);

/* ---- byte pump for raw fds (called with the GIL released) ---- */
#define POSIO_READ_DONE 0      /* gap, deadline or max_bytes */
#define POSIO_READ_CANCELLED 1 /* cancel_fd became readable (or hung up) */
#define POSIO_READ_EOF 2       /* read() returned 0 */

/* 0 when all n bytes are written, else -errno (-ETIMEDOUT when the deadline
 * passed while waiting); *written always says how far it got.  A negative
 * deadline_ms waits forever. */
int posio_write_all(int fd, const uint8_t *data, size_t n, size_t chunk,
                    int64_t deadline_ms, size_t *written);
/* One of POSIO_READ_* or -errno; *got bytes are in out in every case.  A
 * negative inter_byte_ms disables the gap rule, a negative deadline_ms
 * waits forever, a negative cancel_fd means no cancel fd. */
int posio_read_until(int fd, uint8_t *out, size_t max_bytes,
                     int64_t inter_byte_ms, int64_t deadline_ms, int cancel_fd,
                     size_t *got);

/* ---- build record for diagnostics (macros set by build_posio.py) ---- */
const char *posio_build_compiler(void);
const char *posio_build_flags(void);
const char *posio_build_time(void);
/* Stack protector and fortify level as compiled, e.g.
 * "stack-protector-strong fortify-2" (from the compiler's own macros). */
const char *posio_build_hardening(void);

#endif /* POSIO_H */
