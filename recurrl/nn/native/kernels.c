/* Reset-aware LSTM and GRU time loops for recurrl (float32, CPU), called through ctypes.
 *
 * The Python side (recurrl/nn/native/layers.py) does the products that cover the whole sequence
 * (input projection, weight gradients); these functions run what must go step by step: the
 * recurrent matrix product and the gate arithmetic, forward and backward, for every step in one
 * call. Conventions as recurrl/nn/reference.py: time-major, row-major contiguous arrays,
 * torch's gate order (LSTM i, f, g, o; GRU r, z, n), keep[t, b] = 0 where row b's state is reset
 * to zero before step t, else 1.
 *
 * Only C99 plus the GCC/Clang vector extension (portable SIMD: SSE, AVX, AVX-512, NEON); the
 * build (recurrl/nn/native/build.py) compiles this file once per ISA level (portable, AVX2,
 * AVX-512) and loads the highest the CPU runs. The caller checks every array's size first
 * (build.call).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
typedef float vec __attribute__((vector_size(VL * 4), aligned(4))); /* unaligned loads */
#define LOAD(p) (*(const vec *)(p))
#define STORE(p, v) (*(vec *)(p) = (v))

/* out[M, N] += a[M, K] @ w[K, N]; row strides lda, ldw, ldo.
 * Register tiles of MR rows x NV vectors (NV = 3, 2 or 1). The column block is the outer loop, so
 * its slice of w (K x NV vectors: 24 KB for K = 128, NV = 3 with AVX-512) stays in L1 while every
 * row tile reads it. Each output element is summed over k in order whatever the tile, so a row's
 * result does not depend on M or on which tile computes it. */
#if VL == 16
#define MR 8 /* 24 accumulators + 3 w vectors of the 32 AVX-512 registers */
#else
#define MR 4 /* 12 + 3 of 16 */
#endif
static inline __attribute__((always_inline)) void gemm_columns(int M, int K, const float *a,
                                                               int lda, const float *w, int ldw,
                                                               float *out, int ldo, const int NV) {
    int m = 0;
    for (; m + MR <= M; m += MR) {
        const float *ar = a + (size_t)m * lda;
        float *o = out + (size_t)m * ldo;
        vec c[MR][3];
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NV; v++) c[r][v] = LOAD(o + (size_t)r * ldo + v * VL);
        const float *wp = w;
        for (int k = 0; k < K; k++, wp += ldw) {
            vec wv[3];
            for (int v = 0; v < NV; v++) wv[v] = LOAD(wp + v * VL);
            for (int r = 0; r < MR; r++) {
                float x = ar[(size_t)r * lda + k];
                for (int v = 0; v < NV; v++) c[r][v] += x * wv[v];
            }
        }
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NV; v++) STORE(o + (size_t)r * ldo + v * VL, c[r][v]);
    }
    for (; m < M; m++) {
        const float *ar = a + (size_t)m * lda;
        float *o = out + (size_t)m * ldo;
        vec c[3];
        for (int v = 0; v < NV; v++) c[v] = LOAD(o + v * VL);
        const float *wp = w;
        for (int k = 0; k < K; k++, wp += ldw)
            for (int v = 0; v < NV; v++) c[v] += ar[k] * LOAD(wp + v * VL);
        for (int v = 0; v < NV; v++) STORE(o + v * VL, c[v]);
    }
}

static void gemm_block(int M, int K, int N, const float *a, int lda, const float *w, int ldw,
                       float *out, int ldo) {
    int n = 0;
    /* 3-vector tiles, but 4 vectors as two 2-vector tiles rather than 3 + 1 */
    for (; N - n >= 3 * VL && N - n != 4 * VL; n += 3 * VL)
        gemm_columns(M, K, a, lda, w + n, ldw, out + n, ldo, 3);
    for (; n + 2 * VL <= N; n += 2 * VL) gemm_columns(M, K, a, lda, w + n, ldw, out + n, ldo, 2);
    for (; n + VL <= N; n += VL) gemm_columns(M, K, a, lda, w + n, ldw, out + n, ldo, 1);
    for (; n < N; n++) {
        for (int m = 0; m < M; m++) {
            const float *ar = a + (size_t)m * lda;
            float s = out[(size_t)m * ldo + n];
            for (int k = 0; k < K; k++) s += ar[k] * w[(size_t)k * ldw + n];
            out[(size_t)m * ldo + n] = s;
        }
    }
}

/* gemm_block over blocks of KC rows of w, so that a column block's slice stays in L1. */
#define KC 256
static void gemm_acc(int M, int K, int N, const float *a, int lda, const float *w, int ldw,
                     float *out, int ldo) {
    for (int k = 0; k < K; k += KC)
        gemm_block(M, K - k < KC ? K - k : KC, N, a + k, lda, w + (size_t)k * ldw, ldw, out, ldo);
}

/* out[N, M] = w[M, N]^T, in 8 x 8 blocks written row by row (2x faster than 16 x 16 here). */
static void transpose(int M, int N, const float *restrict w, float *restrict out) {
    for (int n0 = 0; n0 < N; n0 += 8)
        for (int m0 = 0; m0 < M; m0 += 8) {
            int m1 = m0 + 8 < M ? m0 + 8 : M, n1 = n0 + 8 < N ? n0 + 8 : N;
            for (int n = n0; n < n1; n++)
                for (int m = m0; m < m1; m++) out[(size_t)n * M + m] = w[(size_t)m * N + n];
        }
}

/* exp(x), relative error ~2e-7 (Cephes expf polynomial); written so that loops vectorise. */
static inline float exp_f(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln2) */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f; /* x - n ln2, ln2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    union { int32_t bits; float value; } scale = {((int32_t)n + 127) << 23}; /* 2^n */
    return p * scale.value;
}
static inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }
static inline float tanh_f(float x) { return 2.0f * sigmoid_f(2.0f * x) - 1.0f; }

/* Gate arithmetic of one batch row (restrict parameters let the compiler vectorise over j). */
static __attribute__((noinline)) void lstm_row_forward(
    int H, float k, float *restrict gi, float *restrict gf, float *restrict gg,
    float *restrict go, const float *restrict c_prev, float *restrict c_out,
    float *restrict y_out) {
    for (int j = 0; j < H; j++) {
        float i = sigmoid_f(gi[j]), f = sigmoid_f(gf[j]);
        float g = tanh_f(gg[j]), o = sigmoid_f(go[j]);
        float c = f * (c_prev[j] * k) + i * g;
        gi[j] = i; gf[j] = f; gg[j] = g; go[j] = o;
        c_out[j] = c;
        y_out[j] = o * tanh_f(c);
    }
}

static __attribute__((noinline)) void lstm_row_backward(
    int H, float k, const float *restrict ai, const float *restrict af, const float *restrict ag,
    const float *restrict ao, const float *restrict c, const float *restrict c_prev,
    const float *restrict dy, float *restrict di, float *restrict df, float *restrict dg,
    float *restrict d_o, float *restrict dh, float *restrict dc) {
    for (int j = 0; j < H; j++) {
        float i = ai[j], f = af[j], g = ag[j], o = ao[j];
        float tc = tanh_f(c[j]);
        float dht = dh[j] + dy[j];
        float dct = dc[j] + dht * o * (1.0f - tc * tc);
        di[j] = dct * g * i * (1.0f - i);
        df[j] = dct * (c_prev[j] * k) * f * (1.0f - f);
        dg[j] = dct * i * (1.0f - g * g);
        d_o[j] = dht * tc * o * (1.0f - o);
        dc[j] = dct * f * k;
    }
}

static __attribute__((noinline)) void gru_row_forward(
    int H, float *restrict gr, float *restrict gz, float *restrict gn, const float *restrict hr,
    const float *restrict hz, const float *restrict hn, const float *restrict h_prev,
    float *restrict hn_out, float *restrict y_out) {
    for (int j = 0; j < H; j++) {
        float r = sigmoid_f(gr[j] + hr[j]), z = sigmoid_f(gz[j] + hz[j]);
        float n = tanh_f(gn[j] + r * hn[j]);
        gr[j] = r; gz[j] = z; gn[j] = n;
        hn_out[j] = hn[j];
        y_out[j] = n + z * (h_prev[j] - n); /* (1 - z) n + z h */
    }
}

static __attribute__((noinline)) void gru_row_backward(
    int H, const float *restrict ar, const float *restrict az, const float *restrict an,
    const float *restrict hn, const float *restrict h_prev, const float *restrict dy,
    const float *restrict dh, float *restrict dxr, float *restrict dxz, float *restrict dxn,
    float *restrict dhr, float *restrict dhz, float *restrict dhn, float *restrict carry) {
    for (int j = 0; j < H; j++) {
        float r = ar[j], z = az[j], n = an[j];
        float dht = dh[j] + dy[j];
        float dn = dht * (1.0f - z) * (1.0f - n * n);
        float dz = dht * (h_prev[j] - n) * z * (1.0f - z);
        float dr = dn * hn[j] * r * (1.0f - r);
        dxr[j] = dr; dxz[j] = dz; dxn[j] = dn;
        dhr[j] = dr; dhz[j] = dz; dhn[j] = dn * r;
        carry[j] = dht * z;
    }
}

/* LSTM forward over T steps.
 *   gates: [T, B, 4H] input part of the pre-activations (x W_ih^T + b_ih + b_hh); overwritten
 *          with the activations (sigmoid i, sigmoid f, tanh g, sigmoid o).
 *   h0, c0: [B, H]; keep: [T, B]; w: W_hh [4H, H], or W_hh^T [H, 4H] if w_transposed.
 *   y, c_all: [T, B, H] outputs and cell states of every step; scratch: [B, H] + [H, 4H]. */
void recurrl_lstm_forward(int T, int B, int H, int w_transposed, float *gates, const float *h0,
                          const float *c0, const float *keep, const float *w, float *y,
                          float *c_all, float *scratch) {
    const int G = 4 * H;
    const float *wt = w; /* W_hh^T: rows of the product are contiguous */
    if (!w_transposed) {
        transpose(G, H, w, scratch + (size_t)B * H);
        wt = scratch + (size_t)B * H;
    }
    const float *h_prev = h0, *c_prev = c0;
    for (int t = 0; t < T; t++) {
        float *g_t = gates + (size_t)t * B * G;
        const float *k_t = keep + (size_t)t * B;
        float *y_t = y + (size_t)t * B * H, *c_t = c_all + (size_t)t * B * H;
        for (int b = 0; b < B; b++) {
            const float k = k_t[b];
            for (int j = 0; j < H; j++) scratch[b * H + j] = h_prev[b * H + j] * k;
        }
        gemm_acc(B, H, G, scratch, H, wt, G, g_t, G);
        for (int b = 0; b < B; b++) {
            float *g = g_t + (size_t)b * G;
            lstm_row_forward(H, k_t[b], g, g + H, g + 2 * H, g + 3 * H, c_prev + (size_t)b * H,
                             c_t + (size_t)b * H, y_t + (size_t)b * H);
        }
        h_prev = y_t;
        c_prev = c_t;
    }
}

/* LSTM backward over T steps, last step first.
 *   act, c_all, c0, keep: from the forward; w: [4H, H] = W_hh; dy: [T, B, H].
 *   dh, dc: [B, H], in: gradients of the final h and c; out: of h0 and c0.
 *   dgates: [T, B, 4H] out, gradients of the pre-activations; scratch: [B, H]. */
void recurrl_lstm_backward(int T, int B, int H, const float *act, const float *c_all,
                           const float *c0, const float *keep, const float *w, const float *dy,
                           float *dh, float *dc, float *dgates, float *scratch) {
    const int G = 4 * H;
    for (int t = T - 1; t >= 0; t--) {
        const float *a_t = act + (size_t)t * B * G, *c_t = c_all + (size_t)t * B * H;
        const float *cp_t = t > 0 ? c_all + (size_t)(t - 1) * B * H : c0;
        const float *dy_t = dy + (size_t)t * B * H, *k_t = keep + (size_t)t * B;
        float *d_t = dgates + (size_t)t * B * G;
        for (int b = 0; b < B; b++) {
            const float *a = a_t + (size_t)b * G;
            float *d = d_t + (size_t)b * G;
            const size_t row = (size_t)b * H;
            lstm_row_backward(H, k_t[b], a, a + H, a + 2 * H, a + 3 * H, c_t + row, cp_t + row,
                              dy_t + row, d, d + H, d + 2 * H, d + 3 * H, dh + row, dc + row);
        }
        memset(scratch, 0, sizeof(float) * (size_t)B * H);
        gemm_acc(B, G, H, d_t, G, w, H, scratch, H);
        for (int b = 0; b < B; b++) {
            const float k = k_t[b];
            for (int j = 0; j < H; j++) dh[b * H + j] = scratch[b * H + j] * k;
        }
    }
}

/* GRU forward over T steps.
 *   gates: [T, B, 3H] input part (x W_ih^T + b_ih); overwritten with the activations r, z, n.
 *   h0: [B, H]; keep: [T, B]; w: W_hh [3H, H], or W_hh^T [H, 3H] if w_transposed;
 *   bias_hh: [3H].
 *   y: [T, B, H]; gates_hn: [T, B, H] recurrent part of n (h W_hn^T + b_hn) of every step;
 *   scratch: [B, H] + [B, 3H] + [H, 3H]. */
void recurrl_gru_forward(int T, int B, int H, int w_transposed, float *gates, const float *h0,
                         const float *keep, const float *w, const float *bias_hh, float *y,
                         float *gates_hn, float *scratch) {
    const int G = 3 * H;
    float *hm = scratch, *gh = scratch + (size_t)B * H;
    const float *wt = w; /* W_hh^T: rows of the product are contiguous */
    if (!w_transposed) {
        transpose(G, H, w, gh + (size_t)B * G);
        wt = gh + (size_t)B * G;
    }
    const float *h_prev = h0;
    for (int t = 0; t < T; t++) {
        float *g_t = gates + (size_t)t * B * G;
        const float *k_t = keep + (size_t)t * B;
        float *y_t = y + (size_t)t * B * H, *hn_t = gates_hn + (size_t)t * B * H;
        for (int b = 0; b < B; b++) {
            const float k = k_t[b];
            for (int j = 0; j < H; j++) hm[b * H + j] = h_prev[b * H + j] * k;
            memcpy(gh + (size_t)b * G, bias_hh, sizeof(float) * G);
        }
        gemm_acc(B, H, G, hm, H, wt, G, gh, G);
        for (int b = 0; b < B; b++) {
            float *g = g_t + (size_t)b * G;
            const float *r = gh + (size_t)b * G;
            const size_t row = (size_t)b * H;
            gru_row_forward(H, g, g + H, g + 2 * H, r, r + H, r + 2 * H, hm + row, hn_t + row,
                            y_t + row);
        }
        h_prev = y_t;
    }
}

/* GRU backward over T steps, last step first.
 *   act, gates_hn, keep: from the forward; h_prev: [T, B, H] masked state entering each step;
 *   w: [3H, H] = W_hh; dy: [T, B, H]; dh: [B, H] in: gradient of the final h, out: of h0.
 *   dgates_x, dgates_h: [T, B, 3H] out, gradients of the input and recurrent parts of the
 *   pre-activations; scratch: [B, H]. */
void recurrl_gru_backward(int T, int B, int H, const float *act, const float *gates_hn,
                          const float *keep, const float *h_prev, const float *w, const float *dy,
                          float *dh, float *dgates_x, float *dgates_h, float *scratch) {
    const int G = 3 * H;
    for (int t = T - 1; t >= 0; t--) {
        const float *a_t = act + (size_t)t * B * G, *hn_t = gates_hn + (size_t)t * B * H;
        const float *hp_t = h_prev + (size_t)t * B * H, *dy_t = dy + (size_t)t * B * H;
        const float *k_t = keep + (size_t)t * B;
        float *dx_t = dgates_x + (size_t)t * B * G, *dh_t = dgates_h + (size_t)t * B * G;
        for (int b = 0; b < B; b++) {
            const float *a = a_t + (size_t)b * G;
            float *gx = dx_t + (size_t)b * G, *gh = dh_t + (size_t)b * G;
            const size_t row = (size_t)b * H;
            gru_row_backward(H, a, a + H, a + 2 * H, hn_t + row, hp_t + row, dy_t + row, dh + row,
                             gx, gx + H, gx + 2 * H, gh, gh + H, gh + 2 * H, scratch + row);
        }
        gemm_acc(B, G, H, dh_t, G, w, H, scratch, H);
        for (int b = 0; b < B; b++) {
            const float k = k_t[b];
            for (int j = 0; j < H; j++) dh[b * H + j] = scratch[b * H + j] * k;
        }
    }
}
