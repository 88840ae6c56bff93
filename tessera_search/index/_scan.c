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

__attribute__((target("avx2"))) static void rows_avx2(const int8_t *x, int64_t n, const int16_t *q, float *out) {
    __m256i w[DIMS / 16];
    for (int d = 0; d < DIMS / 16; d++) w[d] = _mm256_loadu_si256((const __m256i *)(q + 16 * d));
    for (int64_t i = 0; i < n; i++, x += DIMS) {
        __m256i ip0 = _mm256_setzero_si256(), ip1 = _mm256_setzero_si256();
        __m256i xx0 = _mm256_setzero_si256(), xx1 = _mm256_setzero_si256();
        for (int d = 0; d < DIMS / 16; d += 2) {
            __m256i v0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + 16 * d)));
            __m256i v1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + 16 * d + 16)));
            ip0 = _mm256_add_epi32(ip0, _mm256_madd_epi16(v0, w[d]));
            ip1 = _mm256_add_epi32(ip1, _mm256_madd_epi16(v1, w[d + 1]));
            xx0 = _mm256_add_epi32(xx0, _mm256_madd_epi16(v0, v0));
            xx1 = _mm256_add_epi32(xx1, _mm256_madd_epi16(v1, v1));
        }
        __m128i r = sum2(_mm256_add_epi32(ip0, ip1), _mm256_add_epi32(xx0, xx1));
        out[i] = finish(_mm_cvtsi128_si32(r), _mm_extract_epi32(r, 1));
    }
}

/* 1 where the CPU has AVX2. (A 512-bit version of rows_avx2 measured no faster: the scan
 * is bound by memory bandwidth, not arithmetic.) */
int ts_simd(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#else
static void rows_avx2(const int8_t *x, int64_t n, const int16_t *q, float *out) { rows_plain(x, n, q, out); }
int ts_simd(void) { return 0; }
#endif

int ts_abi(void) { return 9; }

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
    if (simd) rows_avx2(x, n, q, out);
    else rows_plain(x, n, q, out);
}

#if defined(__unix__) || defined(__APPLE__)
#include <errno.h>
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
#else
static int64_t read_at(int fd, void *buf, int64_t n, int64_t off) { return -38; }
#endif

/* Items of `item` bytes: out[i] = item pos[i] of file fds[i] (positions counted in items).
 * Returns 0 or -errno. */
int64_t ts_gather(const int32_t *fds, const int64_t *pos, int64_t n, int64_t item, uint8_t *out) {
    for (int64_t i = 0; i < n; i++) {
        int64_t e = read_at(fds[i], out + i * item, item, pos[i] * item);
        if (e) return e;
    }
    return 0;
}

#define BUF_ROWS 2048 /* rows read at a time by pread: 256 KiB, in the core's cache */

/* Scores of every row of the ranges, one after another, into `out`: range g is rows
 * [starts[g], ends[g]) of an int8 array: read with pread from file fds[g] (row 0 at byte
 * 0) into `buf` (BUF_ROWS rows) where fds is given and fds[g] >= 0, else at address
 * bases[g]. Where skips[g] is not 0 it is the address of that array's uint8 flags, one a
 * row, and a flagged row scores -inf. Returns 0, or -errno when a read failed. */
static int64_t score_ranges(const int64_t *bases, const int32_t *fds, const int64_t *skips, const int64_t *starts,
                            const int64_t *ends, int64_t nr, const int16_t *q, float *out, int simd, int8_t *buf) {
    for (int64_t g = 0; g < nr; g++) {
        int64_t n = ends[g] - starts[g];
        if (n <= 0) continue;
        if (fds && fds[g] >= 0) {
            for (int64_t a = 0; a < n; a += BUF_ROWS) {
                int64_t m = n - a < BUF_ROWS ? n - a : BUF_ROWS;
                int64_t e = read_at(fds[g], buf, m * DIMS, (starts[g] + a) * DIMS);
                if (e) return e;
                rows(buf, m, q, out + a, simd);
            }
        } else {
            rows((const int8_t *)(intptr_t)bases[g] + starts[g] * DIMS, n, q, out, simd);
        }
        if (skips && skips[g]) {
            const uint8_t *skip = (const uint8_t *)(intptr_t)skips[g] + starts[g];
            for (int64_t i = 0; i < n; i++)
                if (skip[i]) out[i] = -INFINITY;
        }
        out += n;
    }
    return 0;
}

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

/* The best `r` rows by score of the ranges (see score_ranges), and every other row
 * scoring within `band` of the r-th best, unordered: scores into hs, row numbers
 * (counted over the ranges' rows one after another, from `first`) into hi. `work` holds
 * 2 * rows floats, then BUF_ROWS * DIMS bytes (the read buffer; see score_ranges for
 * `fds`). Returns how many qualified, or -errno when a read failed; when that exceeds
 * `cap` (>= r), only cap are kept (the r best among them) and the caller asks again
 * with a larger cap. */
int64_t ts_scan_top(const int64_t *bases, const int32_t *fds, const int64_t *skips, const int64_t *starts,
                    const int64_t *ends, int64_t nr, const int16_t *q, int64_t r, float band, int64_t cap, float *hs,
                    int64_t *hi, int64_t first, int simd, float *work) {
    int64_t n = 0;
    for (int64_t g = 0; g < nr; g++) n += ends[g] > starts[g] ? ends[g] - starts[g] : 0;
    if (r <= 0 || n == 0 || cap <= 0) return 0;
    float *all = work, *tmp = work + n;
    int64_t e = score_ranges(bases, fds, skips, starts, ends, nr, q, all, simd, (int8_t *)(work + 2 * n));
    if (e) return e;
    float t = -INFINITY;
    if (r < n) {
        for (int64_t i = 0; i < n; i++) tmp[i] = all[i];
        t = kth_largest(tmp, n, r) - band;
    }
    /* The rows strictly above the r-th best come first, then the band, so a cap keeps the best. */
    int64_t found = 0, kept = 0;
    for (int64_t i = 0; i < n; i++)
        if (all[i] >= t) found++;
    if (found <= cap) {
        for (int64_t i = 0; i < n; i++)
            if (all[i] >= t) {
                hs[kept] = all[i];
                hi[kept++] = first + i;
            }
        return found;
    }
    float top = r < n ? t + band : -INFINITY;
    for (int64_t i = 0; i < n && kept < cap; i++)
        if (all[i] > top) {
            hs[kept] = all[i];
            hi[kept++] = first + i;
        }
    for (int64_t i = 0; i < n && kept < cap; i++)
        if (all[i] <= top && all[i] >= t) {
            hs[kept] = all[i];
            hi[kept++] = first + i;
        }
    return found;
}

/* Importable as a module (so the build and the import system can find this library);
 * it defines no Python functions: lists.py calls the C functions above through ctypes. */
static struct PyModuleDef scan_module = {PyModuleDef_HEAD_INIT, "_scan", "int8 scan kernels (used via ctypes)", -1, NULL};
PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&scan_module); }
