/* Exact cosine scans over int8 rows, for the int8-lists index (tessera_search/index/lists.py).
 *
 * Every function is plain C with no Python API; lists.py loads this library with ctypes.
 * Arithmetic is integer (int8 rows times an int16 query, int32 sums): every SIMD path
 * gives bit-identical results, so answers do not depend on the CPU's vector width.
 *
 *   score(x) = dot(x, q16) / sqrt(dot(x, x))   (-inf for a zero row)
 *
 * over the rows (128 int8 each) of ranges of one or more arrays; ts_scan_top keeps the
 * best r (a selection over the scores: linear time whatever r).
 */
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DIMS 128

static inline float finish(int32_t s, int32_t nn) {
    return nn > 0 ? (float)s / sqrtf((float)nn) : -INFINITY;
}

static void rows_plain(const int8_t *x, int64_t n, const int16_t *q, float *out) {
    for (int64_t i = 0; i < n; i++, x += DIMS) {
        int32_t s = 0, nn = 0;
        for (int d = 0; d < DIMS; d++) {
            s += (int32_t)x[d] * q[d];
            nn += (int32_t)x[d] * x[d];
        }
        out[i] = finish(s, nn);
    }
}

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

__attribute__((target("avx2"))) static inline __m128i sum2(__m256i a, __m256i b) {
    /* lanes: (sum a, sum b, sum a, sum b) */
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    __m128i y = _mm_add_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    x = _mm_hadd_epi32(x, y);
    return _mm_hadd_epi32(x, x);
}

/* One row's (dot with q, dot with itself) as 8 int32 lanes each, to be summed. */
__attribute__((target("avx2"))) static inline __m256i row_sums(const int8_t *x, const __m256i *w, __m256i *xx) {
    __m256i ip = _mm256_setzero_si256(), nn = _mm256_setzero_si256();
    for (int d = 0; d < DIMS / 16; d++) {
        __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + 16 * d)));
        ip = _mm256_add_epi32(ip, _mm256_madd_epi16(v, w[d]));
        nn = _mm256_add_epi32(nn, _mm256_madd_epi16(v, v));
    }
    *xx = nn;
    return ip;
}

/* Four rows' scores from their (dot with q, dot with itself) lanes, reduced together and
 * finished as one vector: each 128-bit half of s holds partial sums of rows 0..3, and the
 * halves added give the rows' sums. */
__attribute__((target("avx2"))) static inline void finish4(const __m256i *a, const __m256i *n, float *out) {
    __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    __m256i t = _mm256_hadd_epi32(_mm256_hadd_epi32(n[0], n[1]), _mm256_hadd_epi32(n[2], n[3]));
    __m128i si = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    __m128i ti = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    __m128 r = _mm_div_ps(_mm_cvtepi32_ps(si), _mm_sqrt_ps(_mm_cvtepi32_ps(ti)));
    __m128 live = _mm_castsi128_ps(_mm_cmpgt_epi32(ti, _mm_setzero_si128()));
    _mm_storeu_ps(out, _mm_blendv_ps(_mm_set1_ps(-INFINITY), r, live));
}

/* Four rows at a time, finished by finish4 (IEEE division and square root round the same
 * in SIMD as in scalar code, and the int32 -> float conversion too, so the scores are
 * those of rows_plain bit for bit). */
__attribute__((target("avx2"))) static void rows_avx2(const int8_t *x, int64_t n, const int16_t *q, float *out) {
    __m256i w[DIMS / 16];
    for (int d = 0; d < DIMS / 16; d++) w[d] = _mm256_loadu_si256((const __m256i *)(q + 16 * d));
    int64_t i = 0;
    for (; i + 4 <= n; i += 4, x += 4 * DIMS) {
        __m256i dots[4], norms[4];
        for (int j = 0; j < 4; j++) dots[j] = row_sums(x + j * DIMS, w, &norms[j]);
        finish4(dots, norms, out + i);
    }
    for (; i < n; i++, x += DIMS) {
        __m256i nn, ip = row_sums(x, w, &nn);
        __m128i r = sum2(ip, nn);
        out[i] = finish(_mm_cvtsi128_si32(r), _mm_extract_epi32(r, 1));
    }
}

/* One row's (dot with q, dot with itself) in 512-bit registers, 16 int32 lanes each
 * (AVX-512 VNNI: each vpdpwssd multiplies 32 int16 pairs and adds them into the lanes),
 * folded to 8 lanes for the AVX2 reduction. The same integer sums, so the same bits. */
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) static inline __m256i row_sums512(
    const int8_t *x, const __m512i *w, __m256i *xx) {
    __m512i ip = _mm512_setzero_si512(), nn = _mm512_setzero_si512();
    for (int d = 0; d < DIMS / 32; d++) {
        __m512i v = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(x + 32 * d)));
        ip = _mm512_dpwssd_epi32(ip, v, w[d]);
        nn = _mm512_dpwssd_epi32(nn, v, v);
    }
    *xx = _mm256_add_epi32(_mm512_castsi512_si256(nn), _mm512_extracti64x4_epi64(nn, 1));
    return _mm256_add_epi32(_mm512_castsi512_si256(ip), _mm512_extracti64x4_epi64(ip, 1));
}

/* rows_avx2 with the sums of row_sums512. Ends with vzeroupper: dirty upper halves of
 * the vector registers made the next pread's copy in the kernel ~20x slower here. */
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) static void rows_avx512(const int8_t *x, int64_t n,
                                                                                   const int16_t *q, float *out) {
    __m512i w[DIMS / 32];
    for (int d = 0; d < DIMS / 32; d++) w[d] = _mm512_loadu_si512((const void *)(q + 32 * d));
    int64_t i = 0;
    for (; i + 4 <= n; i += 4, x += 4 * DIMS) {
        __m256i dots[4], norms[4];
        for (int j = 0; j < 4; j++) dots[j] = row_sums512(x + j * DIMS, w, &norms[j]);
        finish4(dots, norms, out + i);
    }
    for (; i < n; i++, x += DIMS) {
        __m256i nn, ip = row_sums512(x, w, &nn);
        __m128i r = sum2(ip, nn);
        out[i] = finish(_mm_cvtsi128_si32(r), _mm_extract_epi32(r, 1));
    }
    _mm256_zeroupper();
}

/* The widest scan the CPU (and its OS) runs: 2 with AVX-512 VNNI, 1 with AVX2, else 0. */
int ts_simd(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni")) return 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#else
static void rows_avx2(const int8_t *x, int64_t n, const int16_t *q, float *out) { rows_plain(x, n, q, out); }
static void rows_avx512(const int8_t *x, int64_t n, const int16_t *q, float *out) { rows_plain(x, n, q, out); }
int ts_simd(void) { return 0; }
#endif

int ts_abi(void) { return 15; }

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>

/* Ask the kernel to read ahead every range (rows of `row_bytes`) that is not in memory,
 * all at once (so a cold scan waits for the disk about once, not once per list), unless
 * a sample of `sample` ranges' first pages is all resident (a warm scan then costs a few
 * mincore calls). Returns the ranges advised. */
int64_t ts_prefetch(const int64_t *bases, const int64_t *starts, const int64_t *ends, int64_t nr, int64_t sample,
                    int64_t row_bytes) {
    long page = sysconf(_SC_PAGESIZE);
    if (nr <= 0 || page <= 0) return 0;
    int cold = 0;
    int64_t step = sample > 0 && nr > sample ? nr / sample : 1;
    for (int64_t g = 0; g < nr && !cold; g += step) {
        if (ends[g] <= starts[g]) continue;
        uintptr_t a = (uintptr_t)bases[g] + (uintptr_t)starts[g] * row_bytes;
        uintptr_t lo = a & ~(uintptr_t)(page - 1);
        unsigned char vec[1];
        if (mincore((void *)lo, (size_t)page, vec) != 0 || !(vec[0] & 1)) cold = 1;
    }
    if (!cold) return 0;
    int64_t advised = 0;
    for (int64_t g = 0; g < nr; g++) {
        if (ends[g] <= starts[g]) continue;
        uintptr_t a = (uintptr_t)bases[g] + (uintptr_t)starts[g] * row_bytes;
        uintptr_t b = (uintptr_t)bases[g] + (uintptr_t)ends[g] * row_bytes;
        uintptr_t lo = a & ~(uintptr_t)(page - 1);
        if (madvise((void *)lo, (size_t)(b - lo), MADV_WILLNEED) == 0) advised++;
    }
    return advised;
}
#else
int64_t ts_prefetch(const int64_t *bases, const int64_t *starts, const int64_t *ends, int64_t nr, int64_t sample,
                    int64_t row_bytes) {
    return 0;
}
#endif

static void rows(const int8_t *x, int64_t n, const int16_t *q, float *out, int simd) {
    if (simd >= 2) rows_avx512(x, n, q, out);
    else if (simd == 1) rows_avx2(x, n, q, out);
    else rows_plain(x, n, q, out);
}

/* A scan's reads of its ranges from files (read_range): the ranges, and how far ahead the
 * kernel was asked to read them. */
typedef struct {
    const int32_t *fds;
    const int64_t *starts, *ends;
    int64_t nr, ahead; /* ranges [0, ahead) advised */
    int cold;
} reader;

#if defined(__unix__) || defined(__APPLE__)
#include <errno.h>
#include <fcntl.h>
#include <sys/uio.h>
/* Drop this process's page-table entries for the pages around [lo, hi) of a read-only
 * file map that spans [start, end): the pages stay in the page cache, the next read is a
 * minor fault. A fault maps more than the page it needs (a 64 KiB window, or a whole
 * large folio, up to 2 MiB), so the span grows to 2 MiB boundaries, within the map. One
 * call for a whole span costs a few microseconds; one a range would cost more than
 * reading it. Only ever given read-only file maps: on private memory this would zero it. */
#define FOLIO ((uintptr_t)2 << 20)
static void unmap_span(uintptr_t lo, uintptr_t hi, uintptr_t start, uintptr_t end) {
    static long page = 0;
    if (!page) page = sysconf(_SC_PAGESIZE);
    if (hi <= lo || page <= 0) return;
    uintptr_t pg = (uintptr_t)page;
    start &= ~(pg - 1);
    end = (end + pg - 1) & ~(pg - 1);
    lo = lo & ~(FOLIO - 1);
    hi = (hi + FOLIO - 1) & ~(FOLIO - 1);
    if (lo < start) lo = start;
    if (hi > end) hi = end;
    if (hi > lo) madvise((void *)lo, (size_t)(hi - lo), MADV_DONTNEED);
}
/* All `n` bytes of file `fd` at `off` into buf: 0, or -errno (-EIO for a file too short). */
static int64_t read_at(int fd, void *buf, int64_t n, int64_t off) {
    char *p = (char *)buf;
    while (n > 0) {
        ssize_t got = pread(fd, p, (size_t)n, (off_t)off);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -(int64_t)errno;
        }
        if (got == 0) return -EIO;
        p += got, n -= got, off += got;
    }
    return 0;
}
/* How many of the n bytes of fd at off are in the page cache from the start, read without
 * waiting for the disk (preadv2 RWF_NOWAIT: 0 when the first page is not there); where the
 * kernel or file system refuses the flag, 0 from then on (the caller reads the usual way). */
#if defined(__linux__) && defined(RWF_NOWAIT)
static int nowait_works = 1;
static int64_t read_cached(int fd, void *buf, int64_t n, int64_t off) {
    char *p = (char *)buf;
    int64_t done = 0;
    while (nowait_works && done < n) {
        struct iovec v = {.iov_base = p + done, .iov_len = (size_t)(n - done)};
        ssize_t got = preadv2(fd, &v, 1, (off_t)(off + done), RWF_NOWAIT);
        if (got > 0) {
            done += got;
            continue;
        }
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS)) nowait_works = 0;
        break;
    }
    return done;
}
#define TS_ADVISE 1
#else
static int64_t read_cached(int fd, void *buf, int64_t n, int64_t off) { return 0; }
#endif

/* A scan's reads of ranges from files: each range is first read from the page cache
 * without waiting; the first range that is not all there (a cold scan) has the kernel
 * read ahead the next AHEAD ranges at once (posix_fadvise WILLNEED, which queues the
 * reads and returns), and the window moves on with the scan, so a cold scan keeps the
 * disk's queue full instead of waiting for one range at a time: on this workplace's
 * disks that is ~5x the bytes per second of one pread at a time. A warm scan makes the
 * one read a range it always made. */
#define AHEAD 256

/* Have the kernel start reading [off, off + len) of fd into the page cache; returns at once. */
static void advise(int fd, int64_t off, int64_t len) {
#ifdef TS_ADVISE
    posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
#else
    (void)fd, (void)off, (void)len;
#endif
}

static void advise_upto(reader *rd, int64_t upto) {
    if (upto > rd->nr) upto = rd->nr;
    for (; rd->ahead < upto; rd->ahead++) {
        int64_t g = rd->ahead;
        if (rd->fds[g] >= 0 && rd->ends[g] > rd->starts[g])
            advise(rd->fds[g], rd->starts[g] * DIMS, (rd->ends[g] - rd->starts[g]) * DIMS);
    }
}

/* Bytes [off, off + n) of range g's file into buf: 0 or -errno. */
static int64_t read_range(reader *rd, int64_t g, void *buf, int64_t n, int64_t off) {
    int fd = rd->fds[g];
    int64_t got = read_cached(fd, buf, n, off);
    if (got < n) rd->cold = 1;
    if (rd->cold && rd->ahead < g + AHEAD / 2) {
        if (rd->ahead <= g) rd->ahead = g + 1; /* this range is being read: not advised */
        advise_upto(rd, g + AHEAD);
    }
    return got < n ? read_at(fd, (char *)buf + got, n - got, off + got) : 0;
}

/* Up to n bytes of fd from off (fewer at the end of the file): how many, or -errno. */
static int64_t read_upto(int fd, void *buf, int64_t n, int64_t off) {
    char *p = (char *)buf;
    int64_t done = 0;
    while (done < n) {
        ssize_t got = pread(fd, p + done, (size_t)(n - done), (off_t)(off + done));
        if (got < 0) {
            if (errno == EINTR) continue;
            return -(int64_t)errno;
        }
        if (got == 0) break;
        done += got;
    }
    return done;
}
#else
static void unmap_span(uintptr_t lo, uintptr_t hi, uintptr_t start, uintptr_t end) {}
static int64_t read_at(int fd, void *buf, int64_t n, int64_t off) { return -38; }
static int64_t read_upto(int fd, void *buf, int64_t n, int64_t off) { return -38; }
static int64_t read_range(reader *rd, int64_t g, void *buf, int64_t n, int64_t off) { return -38; }
static int64_t read_cached(int fd, void *buf, int64_t n, int64_t off) { return 0; }
static void advise(int fd, int64_t off, int64_t len) {}
#endif

/* Items of `item` bytes: out[i] = item pos[i] of file fds[i] (positions counted in items).
 * Items of one file that lie close together (in increasing order, gaps of at most GAP
 * bytes) are read with one pread into a scratch buffer: a read costs ~1 us whatever its
 * size up to a few KiB, so callers pass positions sorted within each file. Returns 0 or
 * -errno. */
#define GAP 4096
#define RUN (256 * 1024)
int64_t ts_gather(const int32_t *fds, const int64_t *pos, int64_t n, int64_t item, uint8_t *out) {
    uint8_t *run = NULL, *miss = NULL;
    int64_t e = 0, missed = 0;
    /* Pass 0 reads what the page cache holds without waiting and has the kernel read ahead
     * the rest, all of it queued at once; pass 1 reads those (a cold gather then waits for
     * the disk about once, not once per item). */
    for (int pass = 0; pass < 2 && !e; pass++) {
        for (int64_t i = 0, j; i < n && !e; i = j) {
            j = i + 1;
            while (j < n && fds[j] == fds[i] && pos[j] >= pos[j - 1] && (pos[j] - pos[j - 1] - 1) * item <= GAP &&
                   (pos[j] - pos[i] + 1) * item <= RUN)
                j++;
            if (pass == 1 && !miss[i]) continue;
            int64_t len = (pos[j - 1] - pos[i] + 1) * item, off = pos[i] * item;
            uint8_t *dst = out + i * item;
            if (j > i + 1) {
                if (!run && !(run = (uint8_t *)malloc(RUN))) {
                    e = -12; /* ENOMEM */
                    break;
                }
                dst = run;
            }
            if (pass == 0 && read_cached(fds[i], dst, len, off) < len) {
                if (!miss && !(miss = (uint8_t *)calloc((size_t)n, 1))) {
                    e = -12;
                    break;
                }
                miss[i] = 1, missed++;
                advise(fds[i], off, len);
                continue;
            }
            if (pass == 1) e = read_at(fds[i], dst, len, off);
            if (dst == run)
                for (int64_t m = i; m < j && !e; m++) memcpy(out + m * item, run + (pos[m] - pos[i]) * item, (size_t)item);
        }
        if (!missed) break;
    }
    free(run);
    free(miss);
    return e;
}

/* Items of `item` bytes already in memory: out[i] = the item at address addrs[i]. */
void ts_copy(const int64_t *addrs, int64_t n, int64_t item, uint8_t *out) {
    for (int64_t i = 0; i < n; i++) memcpy(out + i * item, (const void *)(intptr_t)addrs[i], (size_t)item);
}

#define BUF_ROWS 2048 /* rows read at a time by pread: 256 KiB, in the core's cache */

/* The k-th largest of v[0..n) (k in 1..n); v is reordered. */
static float kth_largest(float *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return v[want];
    }
    return v[want];
}

/* The candidates of a scan: scores cs and row numbers ci (room for `room`), `tmp` (room
 * floats) for selections. A row enters while it scores at least `thr`; when the room is
 * full, thr rises to (r-th best so far) - band and the rows below it leave. thr never
 * passes the final (r-th best) - band, so no row that qualifies in the end is lost. */
typedef struct {
    float *cs, *tmp;
    int64_t *ci;
    int64_t m, room, r;
    float thr, band;
    int over; /* more rows tied within the band than the room holds: some were dropped */
} cands;

/* The threshold for the best r of the m candidates and their band: -inf while m <= r. */
static float cut(cands *c) {
    if (c->m <= c->r) return -INFINITY;
    for (int64_t i = 0; i < c->m; i++) c->tmp[i] = c->cs[i];
    return kth_largest(c->tmp, c->m, c->r) - c->band;
}

static void shrink(cands *c) {
    float t = cut(c);
    if (t > c->thr) c->thr = t;
    int64_t k = 0;
    for (int64_t i = 0; i < c->m; i++)
        if (c->cs[i] >= c->thr) c->cs[k] = c->cs[i], c->ci[k++] = c->ci[i];
    c->m = k;
    if (c->m > c->room / 2) {
        /* The band alone fills half the room: keep the room/2 best (the r best among them) and
         * say so; the caller asks again with more room. */
        for (int64_t i = 0; i < c->m; i++) c->tmp[i] = c->cs[i];
        float top = kth_largest(c->tmp, c->m, c->room / 2);
        int64_t above = 0;
        for (int64_t i = 0; i < c->m; i++) above += c->cs[i] > top;
        int64_t ties = c->room / 2 - above;
        k = 0;
        for (int64_t i = 0; i < c->m; i++)
            if (c->cs[i] > top || (c->cs[i] == top && ties-- > 0)) c->cs[k] = c->cs[i], c->ci[k++] = c->ci[i];
        c->m = k;
        c->thr = top;
        c->over = 1;
    }
}

static inline void offer(cands *c, const float *s, int64_t n, int64_t first) {
    for (int64_t i = 0; i < n; i++)
        if (s[i] >= c->thr) {
            if (c->m == c->room) {
                shrink(c);
                if (s[i] < c->thr) continue;
            }
            c->cs[c->m] = s[i];
            c->ci[c->m++] = first + i;
        }
}

/* The best `r` rows by score of the ranges, and every other row scoring within `band` of
 * the r-th best, unordered: scores into hs, row numbers (counted over the ranges' rows one
 * after another, from `first`) into hi. Range g is rows [starts[g], ends[g]) of an int8
 * array: read with pread from file fds[g] (row 0 at byte 0) in BUF_ROWS rows at a time
 * where fds is given and fds[g] >= 0, else at address bases[g]. Where dests is given and
 * dests[g] is not 0, it is the address of room for the range's rows (row starts[g] first):
 * a read goes there instead of the small buffer (to be kept: a cache of rows), and with
 * fds[g] < 0 the rows are already there. Where skips[g] is not 0 it
 * is the address of that array's uint8 flags, one a row, and a flagged row scores -inf.
 * The scores are kept only while they can still qualify (a rising threshold), so the cost
 * is the scoring, whatever the rows. `work`: TS_WORK(cap) floats (see below). Returns how
 * many qualified, or -errno when a read failed; when that exceeds `cap` (>= r), only cap
 * are kept (the r best among them) and the caller asks again with a larger cap (when more
 * rows tie than the room holds, the count is a lower bound, at least twice cap). Where
 * `limits` is given and limits[g] is not 0, range g's array is a read-only file map
 * ending at address limits[g]: the pages the scan maps reading it there are unmapped
 * again (unmap_span) each time the scan moves to another array and at its end, so a scan
 * keeps about one array's ranges mapped (Linux maps a 64 KiB window or more around each
 * fault, whatever the range). */
#define ROOM(cap) (2 * (cap) + BUF_ROWS)
int64_t ts_work(int64_t cap) { return (int64_t)BUF_ROWS * DIMS / 4 + BUF_ROWS + 4 * ROOM(cap); }

/* Candidates for the best r (room for cap's) in `mem`: 4 * ROOM(cap) floats. */
static cands cands_in(float *mem, int64_t cap, int64_t r, float band) {
    cands c = {.cs = mem, .room = ROOM(cap), .r = r, .thr = -INFINITY, .band = band};
    c.tmp = c.cs + c.room;
    c.ci = (int64_t *)(c.tmp + c.room);
    return c;
}

int64_t ts_scan_top(const int64_t *bases, const int32_t *fds, const int64_t *dests, const int64_t *skips,
                    const int64_t *starts, const int64_t *ends, int64_t nr, const int16_t *q, int64_t r, float band,
                    int64_t cap, float *hs, int64_t *hi, int64_t first, int simd, const int64_t *limits,
                    float *work) {
    if (r <= 0 || cap <= 0) return 0;
    uintptr_t span_lo = 0, span_hi = 0; /* the mapped pages read since the last unmap_span */
    int64_t span_base = 0, span_end = 0;
    int8_t *buf = (int8_t *)work;
    float *sc = work + BUF_ROWS * DIMS / 4;
    cands c = cands_in(sc + BUF_ROWS, cap, r, band);
    int64_t at = first;
    reader rd = {.fds = fds, .starts = starts, .ends = ends, .nr = nr};
    for (int64_t g = 0; g < nr; g++) {
        int64_t n = ends[g] - starts[g];
        if (n <= 0) continue;
        const uint8_t *skip = skips && skips[g] ? (const uint8_t *)(intptr_t)skips[g] + starts[g] : NULL;
        for (int64_t a = 0; a < n; a += BUF_ROWS) {
            int64_t m = n - a < BUF_ROWS ? n - a : BUF_ROWS;
            const int8_t *x;
            int8_t *dest = dests && dests[g] ? (int8_t *)(intptr_t)dests[g] + a * DIMS : NULL;
            if (fds && fds[g] >= 0) {
                int64_t e = read_range(&rd, g, dest ? dest : buf, m * DIMS, (starts[g] + a) * DIMS);
                if (e) return e;
                x = dest ? dest : buf;
            } else if (dest) {
                x = dest;
            } else {
                x = (const int8_t *)(intptr_t)bases[g] + (starts[g] + a) * DIMS;
                if (limits && limits[g]) {
                    uintptr_t lo = (uintptr_t)x, end = lo + (uintptr_t)m * DIMS;
                    if (span_hi && bases[g] != span_base) { /* another array: this one's pages go */
                        unmap_span(span_lo, span_hi, (uintptr_t)span_base, (uintptr_t)span_end);
                        span_hi = 0;
                    }
                    if (!span_hi) span_lo = lo, span_base = bases[g], span_end = limits[g];
                    if (lo < span_lo) span_lo = lo;
                    if (end > span_hi) span_hi = end;
                }
            }
            rows(x, m, q, sc, simd);
            if (skip)
                for (int64_t i = 0; i < m; i++)
                    if (skip[a + i]) sc[i] = -INFINITY;
            offer(&c, sc, m, at + a);
        }
        at += n;
    }
    if (span_hi) unmap_span(span_lo, span_hi, (uintptr_t)span_base, (uintptr_t)span_end);
    if (c.m == 0) return 0;
    float t = cut(&c);
    /* The rows strictly above the r-th best come first, then the band, so a cap keeps the best. */
    int64_t found = 0, kept = 0;
    for (int64_t i = 0; i < c.m; i++) found += c.cs[i] >= t;
    float top = c.m > r ? t + band : -INFINITY;
    for (int64_t i = 0; i < c.m && kept < cap; i++)
        if (c.cs[i] >= t && (found <= cap || c.cs[i] > top)) hs[kept] = c.cs[i], hi[kept++] = c.ci[i];
    for (int64_t i = 0; i < c.m && kept < cap && found > cap; i++)
        if (c.cs[i] <= top && c.cs[i] >= t) hs[kept] = c.cs[i], hi[kept++] = c.ci[i];
    if (c.over && found <= cap) found = 2 * cap; /* rows were dropped: ask again with twice the room */
    return found;
}

/* The first pass of an index with PQ codes (lists.py, the "codes" of a shard): each row
 * has M bytes, its product-quantized residual from its list's centroid, and
 *
 *   estimate(x) = bias[g] + sum_m lut[m * 256 + code_m(x)]
 *
 * (bias: the query's dot with the list's centroid; lut: its dots with the sub-codebooks'
 * centroids). Float sums in a fixed order, no SIMD: every CPU gives the same estimates.
 * Range g is rows [starts[g], ends[g]) of the code array at address bases[g] (row i at
 * bases[g] + i * M), or with fd >= 0 at that byte offset of file fd, read with pread a
 * window of BUF_ROWS * DIMS bytes at a time (a process maps no pages of it); skips as in
 * ts_scan_top. Keeps the best r estimates (no band), unordered, into hs / hi (row numbers
 * counted over the ranges from `first`); `work`: ts_work(r) floats. Returns how many were
 * kept (at most r). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LITTLE_ENDIAN_CODES 1 /* byte k of a code is bits 8k.. of its 8-byte word */
#else
#define LITTLE_ENDIAN_CODES 0
#endif

/* The estimates of n rows of 16-byte codes: the sums of the generic loop below in the
 * same order (chain c adds bytes c, c + 4, c + 8, c + 12), the codes read 8 bytes at a time. */
static void adc16(const uint8_t *x, int64_t n, const float *lut, float bias, float *sc) {
    for (int64_t i = 0; i < n; i++, x += 16) {
        uint64_t a, b;
        memcpy(&a, x, 8);
        memcpy(&b, x + 8, 8);
        float s0 = lut[0 * 256 + (a & 255)], s1 = lut[1 * 256 + ((a >> 8) & 255)];
        float s2 = lut[2 * 256 + ((a >> 16) & 255)], s3 = lut[3 * 256 + ((a >> 24) & 255)];
        s0 += lut[4 * 256 + ((a >> 32) & 255)];
        s1 += lut[5 * 256 + ((a >> 40) & 255)];
        s2 += lut[6 * 256 + ((a >> 48) & 255)];
        s3 += lut[7 * 256 + (a >> 56)];
        s0 += lut[8 * 256 + (b & 255)];
        s1 += lut[9 * 256 + ((b >> 8) & 255)];
        s2 += lut[10 * 256 + ((b >> 16) & 255)];
        s3 += lut[11 * 256 + ((b >> 24) & 255)];
        s0 += lut[12 * 256 + ((b >> 32) & 255)];
        s1 += lut[13 * 256 + ((b >> 40) & 255)];
        s2 += lut[14 * 256 + ((b >> 48) & 255)];
        s3 += lut[15 * 256 + (b >> 56)];
        sc[i] = bias + ((s0 + s1) + (s2 + s3));
    }
}

int64_t ts_adc_top(const int64_t *bases, int fd, const int64_t *skips, const float *bias, const int64_t *starts,
                   const int64_t *ends, int64_t nr, const float *lut, int64_t M, int64_t r, float *hs, int64_t *hi,
                   int64_t first, float *work) {
    if (r <= 0) return 0;
    uint8_t *win = (uint8_t *)work; /* with fd: a window of the codes file, WIN bytes at most */
    const int64_t WIN = (int64_t)BUF_ROWS * DIMS;
    int64_t win_at = 0, win_len = 0;
    float *sc = work + BUF_ROWS * DIMS / 4;
    cands c = cands_in(sc + BUF_ROWS, r, r, 0.0f);
    int64_t at = first;
    for (int64_t g = 0; g < nr; g++) {
        int64_t n = ends[g] - starts[g];
        if (n <= 0) continue;
        const uint8_t *skip = skips && skips[g] ? (const uint8_t *)(intptr_t)skips[g] + starts[g] : NULL;
        for (int64_t a = 0; a < n; a += BUF_ROWS) {
            int64_t m = n - a < BUF_ROWS ? n - a : BUF_ROWS;
            const uint8_t *x;
            int64_t off = bases[g] + (starts[g] + a) * M;
            if (fd >= 0) {
                if (off < win_at || off + m * M > win_at + win_len) {
                    /* read ahead a whole window: the next ranges (the next tiles of the list) follow */
                    int64_t got = read_upto(fd, win, WIN, off);
                    if (got < 0) return got;
                    if (got < m * M) return -EIO;
                    win_at = off, win_len = got;
                }
                x = win + (off - win_at);
            } else {
                x = (const uint8_t *)(intptr_t)off;
            }
            if (M == 16 && LITTLE_ENDIAN_CODES) {
                adc16(x, m, lut, bias[g], sc);
                goto scored;
            }
            for (int64_t i = 0; i < m; i++, x += M) {
                /* four partial sums: independent chains, in a fixed order */
                float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
                int64_t j = 0;
                for (; j + 4 <= M; j += 4) {
                    s0 += lut[j * 256 + x[j]];
                    s1 += lut[(j + 1) * 256 + x[j + 1]];
                    s2 += lut[(j + 2) * 256 + x[j + 2]];
                    s3 += lut[(j + 3) * 256 + x[j + 3]];
                }
                for (; j < M; j++) s0 += lut[j * 256 + x[j]];
                sc[i] = bias[g] + ((s0 + s1) + (s2 + s3));
            }
        scored:
            if (skip)
                for (int64_t i = 0; i < m; i++)
                    if (skip[a + i]) sc[i] = -INFINITY;
            offer(&c, sc, m, at + a);
        }
        at += n;
    }
    if (c.m > r) {
        float t = cut(&c);
        int64_t above = 0;
        for (int64_t i = 0; i < c.m; i++) above += c.cs[i] > t;
        int64_t ties = r - above, k = 0;
        for (int64_t i = 0; i < c.m; i++)
            if (c.cs[i] > t || (c.cs[i] == t && ties-- > 0)) hs[k] = c.cs[i], hi[k++] = c.ci[i];
        return k;
    }
    for (int64_t i = 0; i < c.m; i++) hs[i] = c.cs[i], hi[i] = c.ci[i];
    return c.m;
}

/* Importable as a module (so the build and the import system can find this library);
 * it defines no Python functions: lists.py calls the C functions above through ctypes. */
static struct PyModuleDef scan_module = {PyModuleDef_HEAD_INIT, "_scan", "int8 scan kernels (used via ctypes)", -1, NULL};
PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&scan_module); }
