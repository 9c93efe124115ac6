/* CPU kernels of ada2i_fast: counter-based random numbers for the gradient noise and dropout.
 *
 * Every random number is a pure function of (seed, stream, element index): Threefry-4x32-20
 * (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11; the counter-based
 * generator JAX uses) maps the counter (index / 4) under the key (seed, stream) to four 32-bit
 * words, one per element of an aligned group of four. The numbers are therefore the same for any
 * number of threads and any split of the work, and a dropout mask is recomputed in the backward
 * pass instead of being stored. Threefry's rounds are additions, rotations and xors, which
 * vectorise fully (Philox's 32x32->64-bit products measured 3.4x slower here).
 *
 * Built by cpu_native.py at first use (cc -O3 -march=native -fopenmp) and called through ctypes.
 * OpenMP resolves to the libgomp that torch has already loaded, so these loops share torch's threads.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define GROUP 4          /* elements per generator call */
#define BLOCK 1024       /* elements per inner block: a multiple of GROUP */
#define STATS_CHUNK 32768 /* elements per partial sum of the modulation's statistics: fixed, for determinism */

enum { STREAM_DROPOUT = 0, STREAM_NOISE = 1 };

static inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

/* Threefry-4x32-20 of the counter (x0, x1, x2, x3) under the key schedule ks0..ks4, in place
 * (Random123's rotation constants and key injections; written on scalars so that loops vectorise). */
#define MIX(a, b, c, d, ra, rb) \
    a += b; b = rotl(b, ra) ^ a; \
    c += d; d = rotl(d, rb) ^ c;
#define FOUR_ROUNDS(r0, r1, r2, r3, r4, r5, r6, r7) \
    MIX(x0, x1, x2, x3, r0, r1) MIX(x0, x3, x2, x1, r2, r3) \
    MIX(x0, x1, x2, x3, r4, r5) MIX(x0, x3, x2, x1, r6, r7)
#define INJECT(a, b, c, d, s) x0 += a; x1 += b; x2 += c; x3 += d + (s);
#define THREEFRY_4X32_20 \
    x0 += ks0; x1 += ks1; x2 += ks2; x3 += ks3; \
    FOUR_ROUNDS(10, 26, 11, 21, 13, 27, 23, 5) INJECT(ks1, ks2, ks3, ks4, 1) \
    FOUR_ROUNDS(6, 20, 17, 11, 25, 10, 18, 20) INJECT(ks2, ks3, ks4, ks0, 2) \
    FOUR_ROUNDS(10, 26, 11, 21, 13, 27, 23, 5) INJECT(ks3, ks4, ks0, ks1, 3) \
    FOUR_ROUNDS(6, 20, 17, 11, 25, 10, 18, 20) INJECT(ks4, ks0, ks1, ks2, 4) \
    FOUR_ROUNDS(10, 26, 11, 21, 13, 27, 23, 5) INJECT(ks0, ks1, ks2, ks3, 5)
#define KEY_SCHEDULE(k0, k1, k2, k3) \
    const uint32_t ks0 = (k0), ks1 = (k1), ks2 = (k2), ks3 = (k3), ks4 = 0x1BD11BDAu ^ ks0 ^ ks1 ^ ks2 ^ ks3;

/* One block of the generator, for known-answer tests. */
void ada2i_threefry4x32(const uint32_t ctr[4], const uint32_t key[4], uint32_t out[4]) {
    KEY_SCHEDULE(key[0], key[1], key[2], key[3])
    uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3];
    THREEFRY_4X32_20
    out[0] = x0;
    out[1] = x1;
    out[2] = x2;
    out[3] = x3;
}

/* words[4 j + lane] for the counters (first + j, 0, 0) under the key (seed, stream, 0), j < groups. */
static void random_words(uint64_t first, int64_t groups, uint64_t seed, uint32_t stream, uint32_t *words) {
    KEY_SCHEDULE((uint32_t)seed, (uint32_t)(seed >> 32), stream, 0)
#pragma omp simd
    for (int64_t j = 0; j < groups; ++j) {
        uint64_t counter = first + (uint64_t)j;
        uint32_t x0 = (uint32_t)counter, x1 = (uint32_t)(counter >> 32), x2 = 0, x3 = 0;
        THREEFRY_4X32_20
        words[GROUP * j] = x0;
        words[GROUP * j + 1] = x1;
        words[GROUP * j + 2] = x2;
        words[GROUP * j + 3] = x3;
    }
}

/* ---- conversions and the normal distribution --------------------------------------------------- */

/* The top 24 bits as a float in [0, 1): torch's own uniform resolution for float32. */
static inline float unit_uniform(uint32_t word) { return (float)(word >> 8) * 0x1p-24f; }

static inline float bits_to_float(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint32_t float_to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

/* ln(u) for u in (0, 1]: u = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m-1)/(m+1)). */
static inline float log_unit(float u) {
    uint32_t bits = float_to_bits(u);
    int32_t e = (int32_t)(bits >> 23) - 127;
    float m = bits_to_float((bits & 0x007FFFFFu) | 0x3F800000u); /* [1, 2) */
    int big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    e += big;
    float t = (m - 1.0f) / (m + 1.0f), t2 = t * t;
    float series = 1.0f + t2 * (1.0f / 3 + t2 * (1.0f / 5 + t2 * (1.0f / 7 + t2 * (1.0f / 9))));
    return (float)e * 0.693147180559945f + 2.0f * t * series;
}

/* sin and cos of 2 pi x for x in [0, 1): a quarter turn q = round(4x), the rest in [-pi/4, pi/4]. */
static inline void sincos_turn(float x, float *s, float *c) {
    float quarter = 4.0f * x;
    float q = floorf(quarter + 0.5f);
    float a = (quarter - q) * 1.57079632679f, a2 = a * a;
    float sin_a = a * (1.0f + a2 * (-1.0f / 6 + a2 * (1.0f / 120 + a2 * (-1.0f / 5040 + a2 * (1.0f / 362880)))));
    float cos_a = 1.0f + a2 * (-0.5f + a2 * (1.0f / 24 + a2 * (-1.0f / 720 + a2 * (1.0f / 40320 + a2 * (-1.0f / 3628800)))));
    int turn = (int)q & 3;
    *s = turn == 0 ? sin_a : turn == 1 ? cos_a : turn == 2 ? -sin_a : -cos_a;
    *c = turn == 0 ? cos_a : turn == 1 ? -sin_a : turn == 2 ? -cos_a : sin_a;
}

/* Standard normals from words, a Box-Muller pair per two words (|z| < 5.9, as torch's float normal_). */
static void normals(const uint32_t *words, int64_t pairs, float *z) {
#pragma omp simd
    for (int64_t j = 0; j < pairs; ++j) {
        float u = unit_uniform(words[2 * j]) + 0x1p-25f; /* (0, 1) */
        float radius = sqrtf(-2.0f * log_unit(u));
        float s, c;
        sincos_turn(unit_uniform(words[2 * j + 1]), &s, &c);
        z[2 * j] = radius * c;
        z[2 * j + 1] = radius * s;
    }
}

static inline float bf16_to_float(uint16_t h) { return bits_to_float((uint32_t)h << 16); }

static inline uint16_t float_to_bf16(float f) { /* round to nearest even; NaN stays NaN */
    uint32_t bits = float_to_bits(f);
    uint16_t rounded = (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    return (bits & 0x7FFFFFFFu) > 0x7F800000u ? (uint16_t)((bits >> 16) | 0x40) : rounded;
}

static inline float load(const void *p, int64_t i, int bf16) {
    return bf16 ? bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline void store(void *p, int64_t i, float v, int bf16) {
    if (bf16)
        ((uint16_t *)p)[i] = float_to_bf16(v);
    else
        ((float *)p)[i] = v;
}

/* ---- dropout ----------------------------------------------------------------------------------- */

enum { PLAIN = 0, RELU = 1 };
enum { NO_RESIDUAL = 0, RESIDUAL_F32 = 1, RESIDUAL_BF16 = 2 };

/* Elements [start, start + count) of out = keep ? x * scale : 0 (kind PLAIN) or keep and x > 0 ?
 * x * scale : 0 (RELU), plus residual; element i is kept when the top 24 bits of its word reach
 * threshold = ceil(p 2^24), the mask of torch's `uniform_() >= p`. Inlined with constant flags, so
 * that each combination is a loop of its own. */
static inline __attribute__((always_inline)) void dropout_block(
    const void *x, const int x_bf16, const void *residual, const int residual_kind, void *out, const int out_bf16,
    const int kind, int64_t start, int64_t count, uint32_t threshold, float scale, uint64_t seed) {
    uint32_t words[BLOCK];
    if (threshold > 0) /* p > 0: a draw per element; p = 0 keeps every element (a plain ReLU) */
        random_words((uint64_t)(start / GROUP), (count + GROUP - 1) / GROUP, seed, STREAM_DROPOUT, words);
#pragma omp simd
    for (int64_t i = 0; i < count; ++i) {
        float v = load(x, start + i, x_bf16);
        int kept = (threshold == 0 || (words[i] >> 8) >= threshold) && (kind == PLAIN || v > 0.0f);
        float y = kept ? v * scale : 0.0f;
        if (residual_kind != NO_RESIDUAL) y += load(residual, start + i, residual_kind == RESIDUAL_BF16);
        store(out, start + i, y, out_bf16);
    }
}

#define DROPOUT_CASE(XB, RK, OB, K) \
    if (x_bf16 == XB && residual_kind == RK && out_bf16 == OB && kind == K) { \
        dropout_block(x, XB, residual, RK, out, OB, K, start, count, threshold, scale, seed); \
        continue; \
    }

/* See dropout_block; out may alias x or residual. Arrays are bfloat16 where their flag says so, else
 * float32; residual_kind is NO_RESIDUAL, RESIDUAL_F32 or RESIDUAL_BF16. */
void ada2i_dropout(const void *x, int x_bf16, const void *residual, int residual_kind, void *out, int out_bf16,
                   int64_t n, int kind, uint32_t threshold, float scale, uint64_t seed) {
#pragma omp parallel for schedule(static)
    for (int64_t block = 0; block < (n + BLOCK - 1) / BLOCK; ++block) {
        int64_t start = block * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        DROPOUT_CASE(0, NO_RESIDUAL, 0, PLAIN) DROPOUT_CASE(1, NO_RESIDUAL, 1, PLAIN)
        DROPOUT_CASE(0, NO_RESIDUAL, 0, RELU) DROPOUT_CASE(1, NO_RESIDUAL, 1, RELU)
        DROPOUT_CASE(0, NO_RESIDUAL, 1, PLAIN) DROPOUT_CASE(1, NO_RESIDUAL, 0, PLAIN)
        DROPOUT_CASE(0, RESIDUAL_F32, 0, PLAIN) DROPOUT_CASE(1, RESIDUAL_BF16, 1, PLAIN)
        DROPOUT_CASE(1, RESIDUAL_F32, 0, PLAIN) DROPOUT_CASE(0, RESIDUAL_BF16, 0, PLAIN)
        dropout_block(x, x_bf16, residual, residual_kind, out, out_bf16, kind, start, count, threshold, scale, seed);
    }
}

/* The backward pass of RELU from its output y: grad_x = y > 0 ? grad * scale : 0 (no mask needed). */
void ada2i_relu_dropout_backward(const void *grad, const void *y, void *grad_x, int64_t n, int bf16, float scale) {
    if (bf16) {
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; ++i) store(grad_x, i, load(y, i, 1) > 0.0f ? load(grad, i, 1) * scale : 0.0f, 1);
    } else {
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; ++i) store(grad_x, i, load(y, i, 0) > 0.0f ? load(grad, i, 0) * scale : 0.0f, 0);
    }
}

/* ---- gradient modulation (SPEC section 3) ------------------------------------------------------ */

typedef struct {
    int32_t tensor;
    int64_t start, count;
} chunk;

/* Mean and centred sum of squares (double) of g over one chunk: two passes over data in cache. */
static void chunk_moments(const float *g, int64_t count, double *mean, double *m2) {
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < count; ++i) sum += (double)g[i];
    double mu = sum / (double)count, squares = 0.0;
#pragma omp simd reduction(+ : squares)
    for (int64_t i = 0; i < count; ++i) {
        double d = (double)g[i] - mu;
        squares += d * d;
    }
    *mean = mu;
    *m2 = squares;
}

/* Number of chunks of STATS_CHUNK elements over the tensors; fills `chunks` when it is not NULL. */
int64_t ada2i_modulation_chunks(int32_t n_tensors, const int64_t *numels, chunk *chunks) {
    int64_t total = 0;
    for (int32_t t = 0; t < n_tensors; ++t)
        for (int64_t start = 0; start < numels[t]; start += STATS_CHUNK, ++total)
            if (chunks) {
                chunks[total].tensor = t;
                chunks[total].start = start;
                chunks[total].count = numels[t] - start < STATS_CHUNK ? numels[t] - start : STATS_CHUNK;
            }
    return total;
}

/* Per tensor, the mean and the centred sum of squares (double) of its elements: per chunk in
 * parallel (two passes over data in cache), then the chunks in order (Chan et al.), so the result
 * does not depend on the number of threads. `work` holds 2 doubles per chunk. */
void ada2i_moments(int32_t n_tensors, const float *const *grads, const chunk *chunks, int64_t n_chunks,
                   double *work, double *means, double *m2s) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
        const chunk *k = &chunks[c];
        chunk_moments(grads[k->tensor] + k->start, k->count, &work[2 * c], &work[2 * c + 1]);
    }
    int64_t c = 0;
    for (int32_t t = 0; t < n_tensors; ++t) {
        double count = 0.0, mean = 0.0, m2 = 0.0;
        for (; c < n_chunks && chunks[c].tensor == t; ++c) {
            double n_b = (double)chunks[c].count, total = count + n_b, delta = work[2 * c] - mean;
            mean += delta * n_b / total;
            m2 += work[2 * c + 1] + delta * delta * count * n_b / total;
            count = total;
        }
        means[t] = mean;
        m2s[t] = m2;
    }
}

/* g <- s g + sigma z over one chunk whose first element is element `first` of the concatenated list. */
static void add_noise(float *g, int64_t count, float s, float sigma, int64_t first, uint64_t seed) {
    for (int64_t done = 0; done < count; done += BLOCK) {
        int64_t n = count - done < BLOCK ? count - done : BLOCK;
        int64_t base = first + done, g0 = base / GROUP, groups = (base + n + GROUP - 1) / GROUP - g0;
        uint32_t words[BLOCK + 2 * GROUP];
        float z[BLOCK + 2 * GROUP];
        random_words((uint64_t)g0, groups, seed, STREAM_NOISE, words);
        normals(words, groups * GROUP / 2, z);
        const float *zi = z + (base - g0 * GROUP);
        float *gi = g + done;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) gi[i] = s * gi[i] + sigma * zi[i];
    }
}

/* In place, for every tensor t: g <- scale[t] g, plus sigma[t] z when sigma is given, z the standard
 * normals of the elements' positions in the concatenated list (offsets[t] is tensor t's first). */
void ada2i_scale_and_add_noise(int32_t n_tensors, float *const *grads, const int64_t *offsets, const float *scale,
                               const float *sigma, uint64_t seed, const chunk *chunks, int64_t n_chunks) {
    (void)n_tensors;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
        const chunk *k = &chunks[c];
        float *g = grads[k->tensor] + k->start, s = scale[k->tensor];
        if (sigma) {
            add_noise(g, k->count, s, sigma[k->tensor], offsets[k->tensor] + k->start, seed);
        } else {
#pragma omp simd
            for (int64_t i = 0; i < k->count; ++i) g[i] *= s;
        }
    }
}

/* ---- Adam (torch.optim.Adam's update, one pass per tensor) ---------------------------------------- */

/* For every tensor t, in place (torch's Adam without amsgrad or maximize; weight decay added to the
 * gradient): m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2; p <- p - update_scale[t] (lr / bc1)
 * m / (sqrt(v) / sqrt(bc2) + eps), the bias corrections bc of steps[t] (already counted); and where
 * shadows[t] is given, shadows[t] <- bfloat16(p), the copy a bfloat16 forward pass reads. */
void ada2i_adam(int32_t n_tensors, float *const *params, const float *const *grads, float *const *exp_avgs,
                float *const *exp_avg_sqs, uint16_t *const *shadows, const int64_t *numels, const double *steps,
                const float *update_scale, double lr, double beta1, double beta2, double weight_decay, double eps) {
    for (int32_t t = 0; t < n_tensors; ++t) {
        float *p = params[t], *m = exp_avgs[t], *v = exp_avg_sqs[t];
        const float *g = grads[t];
        uint16_t *shadow = shadows[t];
        const float b1 = (float)beta1, b2 = (float)beta2, wd = (float)weight_decay, e = (float)eps;
        const float step_size = (float)(update_scale[t] * lr / (1.0 - pow(beta1, steps[t])));
        const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, steps[t]));
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < numels[t]; ++i) {
            float grad = g[i] + wd * p[i];
            float mi = m[i] + (1.0f - b1) * (grad - m[i]); /* torch: exp_avg.lerp_(grad, 1 - beta1) */
            float vi = b2 * v[i] + (1.0f - b2) * grad * grad;
            float pi = p[i] - step_size * mi / (sqrtf(vi) / bc2_sqrt + e);
            m[i] = mi;
            v[i] = vi;
            p[i] = pi;
            if (shadow) shadow[i] = float_to_bf16(pi);
        }
    }
}

/* out <- float32(x) for bfloat16 x: the cast of a bfloat16 weight gradient into its float32 master's. */
void ada2i_bf16_to_float(const uint16_t *x, float *out, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(x[i]);
}
