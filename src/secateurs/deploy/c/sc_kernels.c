/* secateurs int8 kernels; see sc_kernels.h. The requantization is TensorFlow Lite's
 * MultiplyByQuantizedMultiplier (SaturatingRoundingDoublingHighMul then
 * RoundingDivideByPOT), so CMSIS-NN would produce the same numbers. */
#include "sc_kernels.h"

#define SC_INT32_MIN (-2147483647 - 1)
#define SC_INT32_MAX 2147483647

static int64_t sc_saturate(int64_t x) {
    return x < SC_INT32_MIN ? SC_INT32_MIN : (x > SC_INT32_MAX ? SC_INT32_MAX : x);
}

/* One requantization, x * mult * 2^(shift - 31) rounded as TFLite rounds it, with what
 * depends on the shift alone worked out once per output channel. mult is TFLite's, in
 * [2^30, 2^31) or 0, so SaturatingRoundingDoublingHighMul never meets its one saturating
 * case (both operands INT32_MIN). */
typedef struct {
    int32_t mult, left, right;
    int32_t half, half_neg; /* what RoundingDivideByPOT adds before flooring */
} sc_rq;

static sc_rq sc_rq_make(int32_t mult, int32_t shift) {
    sc_rq q;
    q.mult = mult;
    q.left = shift > 0 ? shift : 0;
    q.right = shift > 0 ? 0 : -shift;
    q.half = (int32_t)(((int64_t)1 << q.right) >> 1);
    q.half_neg = q.right > 0 ? q.half - 1 : 0;
    return q;
}

/* Both roundings are floors of non-negative values (an offset added, then taken away), so
 * no right shift of a negative number is needed: the result does not depend on how the
 * compiler shifts those.
 * SaturatingRoundingDoublingHighMul: round(x * mult / 2^31), halves up (|x * mult| < 2^62).
 * RoundingDivideByPOT: round(v / 2^right), halves away from zero. */
static inline int32_t sc_rq_apply(int64_t acc, const sc_rq *q) {
    int64_t x = sc_saturate(acc);
    int64_t v;
    if (q->left > 0) {
        x = sc_saturate(x * ((int64_t)1 << q->left));
    }
    v = (int64_t)((uint64_t)(x * q->mult + ((int64_t)1 << 62) + ((int64_t)1 << 30)) >> 31) -
        ((int64_t)1 << 31);
    v += v < 0 ? q->half_neg : q->half;
    return (int32_t)((int64_t)((uint64_t)(v + ((int64_t)1 << 31)) >> q->right) -
                     ((int64_t)1 << (31 - q->right)));
}

static int32_t sc_requantize(int64_t acc, int32_t mult, int32_t shift) {
    const sc_rq q = sc_rq_make(mult, shift);
    return sc_rq_apply(acc, &q);
}

#if SC_LITERT_ROUNDING
/* one rounding of x * mult / 2^(31 - shift): LiteRT's FULLY_CONNECTED */
static int32_t sc_requantize_single(int64_t acc, int32_t mult, int32_t shift) {
    const int32_t total = 31 - shift;
    const int64_t x = sc_saturate(acc);
    const int64_t r = x * mult + ((int64_t)1 << (total - 1));
    return (int32_t)(r >= 0 ? (r >> total) : -((-r + (((int64_t)1 << total) - 1)) >> total));
}
#endif

#if SC_LITERT_ROUNDING
#define SC_REQUANTIZE_LINEAR sc_requantize_single
#else
#define SC_REQUANTIZE_LINEAR sc_requantize
#endif

#if SC_BLOCKED
/* TFLite's requantization in 32-bit pieces for ARMv6-M, which has no long multiply (the
 * int64 path calls the library's 64-bit multiply once per output): the same bytes as
 * sc_requantize for every int32 accumulator, bias and multiplier in [0, 2^31). */
static inline int32_t sc_qadd_v6m(int32_t a, int32_t b) { /* saturating a + b */
    const int32_t r = (int32_t)((uint32_t)a + (uint32_t)b);
    return ((a ^ r) & (b ^ r)) < 0 ? (a < 0 ? SC_INT32_MIN : SC_INT32_MAX) : r;
}

/* floor((x * m + 2^30) / 2^31), m = mh * 2^16 + ml: with x = xh * 2^16 + xl, each of the
 * four partial products fits 32 bits, and the carries are added by hand. */
static inline int32_t sc_high_mul_v6m(int32_t x, int32_t mh, uint32_t ml) {
    const int32_t xh = x >> 16, m1 = xh * (int32_t)ml;
    const uint32_t xl = (uint32_t)x & 0xffffu, m2 = xl * (uint32_t)mh;
    uint32_t lo = xl * ml, t;
    int32_t hi = xh * mh + (m1 >> 16) + (int32_t)(m2 >> 16);
    t = lo + ((uint32_t)m1 << 16);
    hi += t < lo;
    lo = t + (m2 << 16);
    hi += lo < t;
    t = lo + (1u << 30);
    hi += t < lo;
    return (int32_t)(((uint32_t)hi << 1) | (t >> 31));
}

/* MultiplyByQuantizedMultiplier(x, mult, shift): a saturating left shift, the doubling
 * high multiply, then the rounding right shift (halves away from zero). */
static inline int32_t sc_rq_v6m(int32_t x, int32_t mult, int32_t shift) {
    int32_t v, mask;
    if (shift > 0) {
        x = x > (SC_INT32_MAX >> shift)
                ? SC_INT32_MAX
                : (x < (SC_INT32_MIN >> shift) ? SC_INT32_MIN : (int32_t)((uint32_t)x << shift));
        shift = 0;
    }
    v = sc_high_mul_v6m(x, mult >> 16, (uint32_t)mult & 0xffffu);
    mask = (int32_t)((1u << -shift) - 1u);
    return (v >> -shift) + ((v & mask) > ((mask >> 1) + (int32_t)((uint32_t)v >> 31)));
}
#endif

#if SC_BLOCKED && defined(__OPTIMIZE__)
/* *s0 += x . w0 and *s1 += x . w1 over n bytes on ARMv6-M: one index counting down and
 * eight low registers, 9 instructions per two MACs where the compiler's loop spills at
 * -Os (the sums are the same in any order). */
static inline void sc_dot_1x2_v6m(const int8_t *x, const int8_t *w0, const int8_t *w1,
                                  int32_t n, int32_t *s0, int32_t *s1) {
    int32_t a0 = *s0, a1 = *s1, i = n - 1, t0, t1;
    if (n <= 0) {
        return;
    }
    __asm__ volatile(".syntax unified\n"
                     "1:\n\t"
                     "ldrsb %[t0], [%[x], %[i]]\n\t"
                     "ldrsb %[t1], [%[w0], %[i]]\n\t"
                     "muls  %[t1], %[t0]\n\t"
                     "adds  %[a0], %[t1]\n\t"
                     "ldrsb %[t1], [%[w1], %[i]]\n\t"
                     "muls  %[t1], %[t0]\n\t"
                     "adds  %[a1], %[t1]\n\t"
                     "subs  %[i], #1\n\t"
                     "bpl   1b\n\t"
                     : [a0] "+l"(a0), [a1] "+l"(a1), [i] "+l"(i), [t0] "=&l"(t0),
                       [t1] "=&l"(t1)
                     : [x] "l"(x), [w0] "l"(w0), [w1] "l"(w1)
                     : "cc");
    *s0 = a0;
    *s1 = a1;
}
#endif

static int8_t sc_clamp8(int32_t v, int32_t lo, int32_t hi) {
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

static int32_t sc_div_round(int32_t sum, int32_t count) { /* half away from zero */
    return sum > 0 ? (sum + count / 2) / count : -((-sum + count / 2) / count);
}

/* Convolutions run row by row: one int32 accumulator per column of an output row (acc,
 * ow of them), and for each kernel position, dense or a kept filterlet, the bounds of the
 * columns it reaches are worked out once per row, not once per output. Dense and sparse
 * share this loop, so they differ only in the positions they skip. */

/* The output columns [*lo, *hi) whose input column ox * stride + off lies in [0, w). */
static void sc_span(int32_t off, int32_t stride, int32_t w, int32_t ow, int32_t *lo,
                    int32_t *hi) {
    const int32_t first = off < 0 ? (-off + stride - 1) / stride : 0;
    int32_t end = off < w ? (w - 1 - off) / stride + 1 : 0;
    end = end < ow ? end : ow;
    *lo = first;
    *hi = end > first ? end : first;
}

/* acc[ox] += (xp[(ox - lo) * sw] - zp) * wv for the columns ox in [lo, hi): one input
 * channel's row against one weight. */
static inline void sc_conv_tap_channel(const int8_t *xp, int32_t wv, int32_t lo, int32_t hi,
                                       int32_t sw, int32_t zp, int32_t *acc) {
    int32_t ox;
    for (ox = lo; ox < hi; ++ox, xp += sw) {
        acc[ox] += ((int32_t)*xp - zp) * wv;
    }
}

/* acc[ox] += sum over ic of (x[ic][iy][ox * stride_w + off] - in_zp) * w[ic], for
 * every column ox that kernel column reaches; xrow is row iy of the group's first input
 * channel. ic runs over the group's cin/groups channels, or, where chan is not null, over
 * the p->live channels it lists (the others have no weight in the layer). */
static inline void sc_conv_tap(const int8_t *xrow, const int8_t *w, const uint8_t *chan,
                               int32_t off, int32_t *acc, const sc_conv_params *p) {
    const int32_t cin_g = p->cin / p->groups;
    const int32_t plane = p->h * p->w;
    const int32_t sw = p->stride_w;
    const int32_t zp = p->in_zp;
    int32_t lo, hi, ox, ic;
    sc_span(off, sw, p->w, p->ow, &lo, &hi);
    if (lo >= hi) {
        return;
    }
    if (chan) { /* channel by channel, so the list is read once per row */
        for (ic = 0; ic < p->live; ++ic) {
            sc_conv_tap_channel(xrow + chan[ic] * plane + lo * sw + off, w[ic], lo, hi, sw, zp,
                                acc);
        }
        return;
    }
    if (cin_g == 1) { /* depthwise, or a single input channel */
        sc_conv_tap_channel(xrow + lo * sw + off, w[0], lo, hi, sw, zp, acc);
        return;
    }
    for (ox = lo; ox < hi; ++ox) {
        const int8_t *xp = xrow + ox * sw + off;
        int32_t sum = 0;
        for (ic = 0; ic < cin_g; ++ic) {
            sum += ((int32_t)xp[ic * plane] - zp) * w[ic];
        }
        acc[ox] += sum;
    }
}

static void sc_conv_row_out(const int32_t *acc, int8_t *y, int32_t bias, const sc_rq *q,
                            const sc_conv_params *p) {
    int32_t ox;
#if SC_BLOCKED
    const int32_t shift = q->left - q->right;
    for (ox = 0; ox < p->ow; ++ox) {
        y[ox] = sc_clamp8(sc_rq_v6m(sc_qadd_v6m(acc[ox], bias), q->mult, shift) + p->out_zp,
                          p->act_min, p->act_max);
    }
#else
    for (ox = 0; ox < p->ow; ++ox) {
        y[ox] = sc_clamp8(sc_rq_apply((int64_t)acc[ox] + bias, q) + p->out_zp, p->act_min,
                          p->act_max);
    }
#endif
}

/* One output channel oc of a dense convolution, from its weights wo [kh][kw][cin/groups]
 * (each kernel position's weights contiguous, as a filterlet's are). */
static void sc_conv_channel(const int8_t *x, int8_t *y, const int8_t *wo, int32_t oc,
                            int32_t bias, int32_t mult, int32_t shift, int32_t *acc,
                            const sc_conv_params *p) {
    const int32_t cin_g = p->cin / p->groups;
    const int32_t plane = p->h * p->w;
    const int8_t *xg = x + (oc / (p->cout / p->groups)) * cin_g * plane;
    const sc_rq q = sc_rq_make(mult, shift);
    int32_t oy, ky, kx;
    for (oy = 0; oy < p->oh; ++oy) {
        memset(acc, 0, (size_t)p->ow * sizeof(int32_t));
        for (ky = 0; ky < p->kh; ++ky) {
            const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dil_h;
            if (iy < 0 || iy >= p->h) {
                continue;
            }
            for (kx = 0; kx < p->kw; ++kx) {
                sc_conv_tap(xg + iy * p->w, wo + (ky * p->kw + kx) * cin_g, 0,
                            kx * p->dil_w - p->pad_left, acc, p);
            }
        }
        sc_conv_row_out(acc, y + (oc * p->oh + oy) * p->ow, bias, &q, p);
    }
}

#if SC_DSP || SC_BLOCKED
#include "sc_kernels_dsp.h"
#endif

void sc_conv(const int8_t *x, int8_t *y, const int8_t *w, const int32_t *bias,
             const int32_t *mult, const int8_t *shift, int32_t *acc, const sc_conv_params *p) {
    const int32_t per_channel = p->cin / p->groups * p->kh * p->kw;
    int32_t oc;
#if SC_DSP
    if (p->cin == p->groups && p->groups > 1) { /* depthwise; one input channel: as dense */
        sc_conv_dsp_depthwise(x, y, w, bias, mult, shift, acc, p);
        return;
    }
#endif
#if SC_DSP || SC_BLOCKED
    if ((p->cin != p->groups || p->groups == 1) && sc_conv_dsp(x, y, w, bias, mult, shift, acc, p)) {
        return;
    }
#endif
    for (oc = 0; oc < p->cout; ++oc) {
        sc_conv_channel(x, y, w + oc * per_channel, oc, bias[oc], mult[oc], shift[oc], acc,
                        p);
    }
}

/* Weights first..first+count-1 of a tensor packed at bits (4 or 2) per weight, low bits
 * first, two's complement, into int8. */
static void sc_unpack(const uint8_t *packed, int32_t first, int32_t count, int32_t bits,
                      int8_t *out) {
    const int32_t per_byte = 8 / bits;
    const int32_t mask = (1 << bits) - 1;
    const int32_t sign = 1 << (bits - 1);
    int32_t i;
    for (i = 0; i < count; ++i) {
        const int32_t k = first + i;
        const int32_t v = (packed[k / per_byte] >> ((k % per_byte) * bits)) & mask;
        out[i] = (int8_t)((v ^ sign) - sign);
    }
}

void sc_conv_packed(const int8_t *x, int8_t *y, const uint8_t *w, int32_t bits,
                    int8_t *scratch, const int32_t *bias, const int32_t *mult,
                    const int8_t *shift, int32_t *acc, const sc_conv_params *p) {
    const int32_t per_channel = p->cin / p->groups * p->kh * p->kw;
    int32_t oc;
    for (oc = 0; oc < p->cout; ++oc) {
        sc_unpack(w, oc * per_channel, per_channel, bits, scratch);
        sc_conv_channel(x, y, scratch, oc, bias[oc], mult[oc], shift[oc], acc, p);
    }
}

void sc_conv_filterlet(const int8_t *x, int8_t *y, const int8_t *vals, const uint8_t *col,
                       const uint8_t *count, const uint8_t *chan, const int32_t *bias,
                       const int32_t *mult, const int8_t *shift, const int8_t *fill,
                       int32_t *acc, const sc_conv_params *p) {
    const int32_t cin_g = p->cin / p->groups;
    const int32_t cout_g = p->cout / p->groups;
    const int32_t plane = p->h * p->w;
    const int32_t taps = p->kh * p->kw;
    int32_t oc, oy, r, start = 0, k = 0; /* k: filters with filterlets so far */
#if SC_DSP
    if (cin_g > 1 && p->kh <= SC_DSP_MAX_KH) {
        sc_conv_filterlet_dsp(x, y, vals, col, count, chan, bias, mult, shift, fill, acc, p);
        return;
    }
    if (cin_g == 1 && p->live == 1 && taps <= SC_DSP_DW_TAPS) {
        sc_conv_filterlet_dsp_depthwise(x, y, vals, col, count, bias, mult, shift, fill, acc,
                                        p);
        return;
    }
#endif
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *xg = x + (oc / cout_g) * cin_g * plane;
        const int32_t n = taps <= 15 ? (count[oc >> 1] >> ((oc & 1) << 2)) & 15 : count[oc];
        const int32_t end = start + n; /* filter oc's filterlets: [start, end) */
        sc_rq q;
        if (n == 0) { /* nothing to add up: the requantized bias, everywhere */
            memset(y + oc * p->oh * p->ow, *fill++, (size_t)(p->oh * p->ow));
            continue;
        }
        q = sc_rq_make(mult[k], shift[k]);
        for (oy = 0; oy < p->oh; ++oy) {
            memset(acc, 0, (size_t)p->ow * sizeof(int32_t));
            for (r = start; r < end; ++r) {
                const int32_t at = taps == 1 ? 0 : col[r]; /* a 1x1 kernel stores no index */
                const int32_t ky = at / p->kw;
                const int32_t kx = at - ky * p->kw;
                const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dil_h;
                if (iy < 0 || iy >= p->h) {
                    continue;
                }
                sc_conv_tap(xg + iy * p->w, vals + r * p->live, chan,
                            kx * p->dil_w - p->pad_left, acc, p);
            }
            sc_conv_row_out(acc, y + (oc * p->oh + oy) * p->ow, bias[k], &q, p);
        }
        start = end;
        ++k;
    }
}

static int8_t sc_linear_row(const int8_t *x, const int8_t *wo, int32_t bias, int32_t mult,
                            int32_t shift, const sc_linear_params *p) {
    int32_t i, acc = 0;
    for (i = 0; i < p->in_features; ++i) {
        acc += ((int32_t)x[i] - p->in_zp) * wo[i];
    }
    return sc_clamp8(SC_REQUANTIZE_LINEAR((int64_t)acc + bias, mult, shift) + p->out_zp,
                     p->act_min, p->act_max);
}

#if SC_BLOCKED && !SC_LITERT_ROUNDING /* in 32-bit pieces: ARMv6-M has no long multiply */
#define SC_RQ_BLOCKED(acc, bias, mult, shift) sc_rq_v6m(sc_qadd_v6m(acc, bias), mult, shift)
#else
#define SC_RQ_BLOCKED(acc, bias, mult, shift) \
    SC_REQUANTIZE_LINEAR((int64_t)(acc) + (bias), mult, shift)
#endif

void sc_linear(const int8_t *x, int8_t *y, const int8_t *w, const int32_t *bias,
               const int32_t *mult, const int8_t *shift, const sc_linear_params *p) {
    int32_t o;
#if SC_DSP
    sc_linear_dsp(x, y, w, bias, mult, shift, p);
    return;
#endif
#if SC_BLOCKED
    if (p->in_zp == 0) { /* zero point folded into the biases: two rows share each input */
        const int32_t n = p->in_features;
        for (o = 0; o + 2 <= p->out_features; o += 2) {
            const int8_t *w0 = w + o * n, *w1 = w0 + n;
            int32_t a0 = 0, a1 = 0;
#if defined(__OPTIMIZE__)
            sc_dot_1x2_v6m(x, w0, w1, n, &a0, &a1);
#else
            int32_t i;
            for (i = 0; i < n; ++i) {
                const int32_t xv = x[i];
                a0 += xv * w0[i];
                a1 += xv * w1[i];
            }
#endif
            y[o] = sc_clamp8(SC_RQ_BLOCKED(a0, bias[o], mult[o], shift[o]) + p->out_zp,
                             p->act_min, p->act_max);
            y[o + 1] = sc_clamp8(SC_RQ_BLOCKED(a1, bias[o + 1], mult[o + 1], shift[o + 1]) +
                                     p->out_zp,
                                 p->act_min, p->act_max);
        }
        for (; o < p->out_features; ++o) {
            y[o] = sc_linear_row(x, w + o * n, bias[o], mult[o], shift[o], p);
        }
        return;
    }
#endif
    for (o = 0; o < p->out_features; ++o) {
        y[o] = sc_linear_row(x, w + o * p->in_features, bias[o], mult[o], shift[o], p);
    }
}

void sc_linear_packed(const int8_t *x, int8_t *y, const uint8_t *w, int32_t bits,
                      int8_t *scratch, const int32_t *bias, const int32_t *mult,
                      const int8_t *shift, const sc_linear_params *p) {
    int32_t o;
    for (o = 0; o < p->out_features; ++o) {
        sc_unpack(w, o * p->in_features, p->in_features, bits, scratch);
        y[o] = sc_linear_row(x, scratch, bias[o], mult[o], shift[o], p);
    }
}

static const uint8_t sc_lowest_bit[16] = {0, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0};

void sc_linear_bitmask(const int8_t *x, int8_t *y, const uint8_t *mask, const int8_t *vals,
                       const int32_t *bias, const int32_t *mult, const int8_t *shift,
                       const sc_linear_params *p) {
    const int32_t row_bytes = (p->in_features + 7) / 8;
    const int8_t *v = vals;
    int32_t o, j;
    for (o = 0; o < p->out_features; ++o) {
        const uint8_t *m = mask + o * row_bytes;
        int32_t acc = 0;
        for (j = 0; j < row_bytes; ++j) {
            uint32_t b = m[j]; /* kept weights among inputs 8j .. 8j + 7 */
            const int8_t *xj = x + 8 * j;
            while (b != 0) {
                const int32_t i = (b & 15) ? sc_lowest_bit[b & 15] : 4 + sc_lowest_bit[b >> 4];
                acc += ((int32_t)xj[i] - p->in_zp) * *v++;
                b &= b - 1; /* clear that bit */
            }
        }
        y[o] = sc_clamp8(SC_REQUANTIZE_LINEAR((int64_t)acc + bias[o], mult[o], shift[o]) + p->out_zp,
                         p->act_min, p->act_max);
    }
}

/* Element i of a broadcast operand: a[(i / div) % mod], or a[i] when it is not broadcast
 * (div 1, mod count), which spares the two divisions per element. */
#define SC_OPERAND(x, div, mod, whole, i) ((whole) ? (x)[i] : (x)[((i) / (div)) % (mod)])

void sc_add(const int8_t *a, const int8_t *b, int8_t *y, const sc_binary_params *p) {
#if SC_DSP
    if (p->a_div == 1 && p->a_mod == p->count && p->b_div == 1 && p->b_mod == p->count) {
        sc_add_dsp(a, b, y, p);
        return;
    }
#endif
    const sc_rq qa = sc_rq_make(p->a_mult, p->a_shift);
    const sc_rq qb = sc_rq_make(p->b_mult, p->b_shift);
    const sc_rq qy = sc_rq_make(p->out_mult, p->out_shift);
    const int a_whole = p->a_div == 1 && p->a_mod == p->count;
    const int b_whole = p->b_div == 1 && p->b_mod == p->count;
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const int32_t va = ((int32_t)SC_OPERAND(a, p->a_div, p->a_mod, a_whole, i) - p->a_zp) *
                           (1 << 20);
        const int32_t vb = ((int32_t)SC_OPERAND(b, p->b_div, p->b_mod, b_whole, i) - p->b_zp) *
                           (1 << 20);
        const int32_t sa = sc_rq_apply(va, &qa);
        const int32_t sb = sc_rq_apply(vb, &qb);
        y[i] = sc_clamp8(sc_rq_apply((int64_t)sa + sb, &qy) + p->out_zp, p->act_min,
                         p->act_max);
    }
}

void sc_mul(const int8_t *a, const int8_t *b, int8_t *y, const sc_binary_params *p) {
    const sc_rq qy = sc_rq_make(p->out_mult, p->out_shift);
    const int a_whole = p->a_div == 1 && p->a_mod == p->count;
    const int b_whole = p->b_div == 1 && p->b_mod == p->count;
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const int32_t va = (int32_t)SC_OPERAND(a, p->a_div, p->a_mod, a_whole, i) - p->a_zp;
        const int32_t vb = (int32_t)SC_OPERAND(b, p->b_div, p->b_mod, b_whole, i) - p->b_zp;
        y[i] = sc_clamp8(sc_rq_apply(va * vb, &qy) + p->out_zp, p->act_min, p->act_max);
    }
}

void sc_mean(const int8_t *x, int8_t *y, const sc_mean_params *p) {
    int32_t o, r, i;
    for (o = 0; o < p->outer; ++o) {
        for (i = 0; i < p->inner; ++i) {
            int32_t acc = 0;
            for (r = 0; r < p->reduce; ++r) {
                acc += (int32_t)x[(o * p->reduce + r) * p->inner + i] - p->in_zp;
            }
            acc = sc_requantize(acc, p->mult, p->shift); /* 1/reduce folded in */
            y[o * p->inner + i] = sc_clamp8(acc + p->out_zp, -128, 127);
        }
    }
}

void sc_avg_pool(const int8_t *x, int8_t *y, const sc_pool_params *p) {
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < p->c; ++c) {
        const int8_t *xc = x + c * p->h * p->w;
        for (oy = 0; oy < p->oh; ++oy) {
            for (ox = 0; ox < p->ow; ++ox) {
                int32_t sum = 0, count = 0;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                        if (iy < 0 || iy >= p->h || ix < 0 || ix >= p->w) {
                            if (p->count_include_pad) {
                                sum += p->zp;
                                ++count;
                            }
                            continue;
                        }
                        sum += xc[iy * p->w + ix];
                        ++count;
                    }
                }
                y[(c * p->oh + oy) * p->ow + ox] = sc_clamp8(sc_div_round(sum, count), -128, 127);
            }
        }
    }
}

void sc_max_pool(const int8_t *x, int8_t *y, const sc_pool_params *p) {
    int32_t c, oy, ox, ky, kx;
    const int unpadded = p->pad_top == 0 && p->pad_left == 0 && p->dil_h == 1 &&
                         p->dil_w == 1 && (p->oh - 1) * p->stride_h + p->kh <= p->h &&
                         (p->ow - 1) * p->stride_w + p->kw <= p->w;
#if SC_DSP
    if (unpadded && p->kh == 2 && p->kw == 2 && p->stride_h == 2 && p->stride_w == 2) {
        sc_max_pool_2x2_dsp(x, y, p);
        return;
    }
#endif
    if (unpadded) { /* every window inside the input: no bounds to test */
        for (c = 0; c < p->c; ++c) {
            const int8_t *xc = x + c * p->h * p->w;
            for (oy = 0; oy < p->oh; ++oy) {
                const int8_t *row = xc + oy * p->stride_h * p->w;
                for (ox = 0; ox < p->ow; ++ox, row += p->stride_w) {
                    int32_t best = -128;
                    for (ky = 0; ky < p->kh; ++ky) {
                        const int8_t *r = row + ky * p->w;
                        for (kx = 0; kx < p->kw; ++kx) {
                            best = r[kx] > best ? r[kx] : best;
                        }
                    }
                    *y++ = (int8_t)best;
                }
            }
        }
        return;
    }
    for (c = 0; c < p->c; ++c) {
        const int8_t *xc = x + c * p->h * p->w;
        for (oy = 0; oy < p->oh; ++oy) {
            for (ox = 0; ox < p->ow; ++ox) {
                int32_t best = -128;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dil_h;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_left + kx * p->dil_w;
                        if (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w &&
                            xc[iy * p->w + ix] > best) {
                            best = xc[iy * p->w + ix];
                        }
                    }
                }
                y[(c * p->oh + oy) * p->ow + ox] = (int8_t)best;
            }
        }
    }
}

void sc_clamp(const int8_t *x, int8_t *y, int32_t count, int32_t lo, int32_t hi) {
    int32_t i;
    for (i = 0; i < count; ++i) {
        y[i] = sc_clamp8(x[i], lo, hi);
    }
}

void sc_lut(const int8_t *x, int8_t *y, int32_t count, const int8_t *table) {
    int32_t i;
    for (i = 0; i < count; ++i) {
        y[i] = table[(int32_t)x[i] + 128];
    }
}

void sc_copy(const int8_t *const *srcs, int8_t *y, const sc_copy_run *runs, int32_t n_runs,
             int8_t fill) {
    int32_t r;
    for (r = 0; r < n_runs; ++r) {
        if (runs[r].src < 0) {
            memset(y + runs[r].dst_off, fill, (size_t)runs[r].len);
        } else {
            memmove(y + runs[r].dst_off, srcs[runs[r].src] + runs[r].src_off,
                    (size_t)runs[r].len);
        }
    }
}
