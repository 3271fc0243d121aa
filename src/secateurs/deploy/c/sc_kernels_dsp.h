/* secateurs kernels for the Arm DSP extension, included by sc_kernels.c where SC_DSP is set,
 * and where SC_BLOCKED is (ARMv6-M), for the dense convolution's blocking alone, its dot
 * product then one multiply per MAC.
 *
 * The dot products run on raw int8 values: SXTB16 splits a word of four int8 into two
 * pairs of int16 (bytes 0 and 2, bytes 1 and 3), the same split of the weights lines the
 * pairs up, and SMLAD adds both products at once. The zero point is taken out once, as
 * in_zp times the sum of the weights, which padding (filled with in_zp) makes exact:
 * sum((x - zp) * w) = sum(x * w) - zp * sum(w), in int32 without overflow for any layer
 * with fewer than 2^17 weights per output. Requantization is TFLite's, in 32-bit
 * arithmetic with one 64-bit product; the results equal the portable path's bit for bit.
 *
 * Convolutions with several input channels per group copy the input rows a kernel row
 * reads into scratch, channel-last, one row per kernel row, kept across output rows
 * (row iy sits in slot iy % kh), so that each output is kh dot products of kw * cin/groups
 * contiguous bytes. Depthwise convolutions copy one padded input plane and slide over it. */
#if SC_DSP
#include <arm_acle.h>
#endif

#if defined(__GNUC__)
#define SC_NOINLINE __attribute__((noinline)) /* a loop that needs its own registers */
#else
#define SC_NOINLINE
#endif

static inline int32_t sc_load32(const int8_t *p) { /* unaligned word: LDR on ARMv7-M */
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

#if SC_DSP
static inline int32_t sc_sxtb16_ror8(int32_t v) { /* SXTB16 with its free rotation */
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* x * mult * 2^(shift - 31), rounded as TFLite's MultiplyByQuantizedMultiplier: the
 * doubling high multiply as one SMLAL onto 2^30, then the rounding right shift by right,
 * mask being 2^right - 1 (worked out once per channel by callers that loop). */
static inline int32_t sc_rq_dsp_mask(int32_t x, int32_t mult, int32_t left, int32_t right,
                                     int32_t mask) {
    const int64_t prod = (int64_t)1 << 30;
    int32_t v;
    if (left > 0) {
        x = x > (SC_INT32_MAX >> left) ? SC_INT32_MAX
                                       : (x < (SC_INT32_MIN >> left) ? SC_INT32_MIN : (int32_t)((uint32_t)x << left));
    }
    {
        uint32_t lo = (uint32_t)prod;
        int32_t hi = 0;
        __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(x), "r"(mult));
        v = (int32_t)((lo >> 31) | ((uint32_t)hi << 1));
    }
    return (v >> right) + ((v & mask) > ((mask >> 1) + (int32_t)((uint32_t)v >> 31)));
}

static inline int32_t sc_rq_dsp(int32_t x, int32_t mult, int32_t left, int32_t right) {
    return sc_rq_dsp_mask(x, mult, left, right, (int32_t)((1u << right) - 1u));
}

/* Two im2col columns x and z = x + zoff, their first 4 * blocks bytes as int16 pairs:
 * per four bytes, x's bytes 0 and 2, x's 1 and 3, then z's, as SXTB16 splits them. Each
 * column is used by every output channel, so it is split once, not once per channel. */
static void sc_expand_2(const int8_t *x, int32_t zoff, int32_t blocks, int32_t *out) {
    for (; blocks > 0; --blocks, x += 4, out += 4) {
        const int32_t xv = sc_load32(x), zv = sc_load32(x + zoff);
        out[0] = __sxtb16(xv);
        out[1] = sc_sxtb16_ror8(xv);
        out[2] = __sxtb16(zv);
        out[3] = sc_sxtb16_ror8(zv);
    }
}

#if defined(__OPTIMIZE__) && defined(__thumb2__)
/* One block: four bytes of both columns, split (two LDRD), against four bytes of each of
 * two rows (w and v), for sixteen MACs. */
#define SC_DOT16_ASM_BLOCK                                                                     \
    "ldrd %[xe], %[xo], [%[p]], #8\n\t"                                                        \
    "ldrd %[ze], %[zo], [%[p]], #8\n\t"                                                        \
    "ldr %[t], [%[w]], #4\n\t"                                                                 \
    "sxtb16 %[u], %[t]\n\t"                                                                    \
    "sxtb16 %[t], %[t], ror #8\n\t"                                                            \
    "smlad %[a0], %[xe], %[u], %[a0]\n\t"                                                      \
    "smlad %[a0], %[xo], %[t], %[a0]\n\t"                                                      \
    "smlad %[b0], %[ze], %[u], %[b0]\n\t"                                                      \
    "smlad %[b0], %[zo], %[t], %[b0]\n\t"                                                      \
    "ldr %[t], [%[v]], #4\n\t"                                                                 \
    "sxtb16 %[u], %[t]\n\t"                                                                    \
    "sxtb16 %[t], %[t], ror #8\n\t"                                                            \
    "smlad %[a1], %[xe], %[u], %[a1]\n\t"                                                      \
    "smlad %[a1], %[xo], %[t], %[a1]\n\t"                                                      \
    "smlad %[b1], %[ze], %[u], %[b1]\n\t"                                                      \
    "smlad %[b1], %[zo], %[t], %[b1]\n\t"
#define SC_DOT16_ASM_OPERANDS                                                                  \
    : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [p] "+r"(xz), [w] "+r"(w),   \
      [v] "+r"(v), [n] "+r"(n), [xe] "=&r"(xe), [xo] "=&r"(xo), [ze] "=&r"(ze),                \
      [zo] "=&r"(zo), [t] "=&r"(t), [u] "=&r"(u)                                               \
    :                                                                                          \
    : "cc", "memory"
#endif

/* sc_dot_2x2 over the first 4 * blocks bytes, the two columns split by sc_expand_2: per
 * four bytes two weight words, four SXTB16 and eight SMLAD for sixteen MACs. Optimized
 * Thumb-2 builds run it as written in assembly, two blocks a turn: the loop needs all
 * fourteen free registers, which the compiler's own allocation spills (six more
 * instructions a block). */
static inline void sc_dot16_2x2(const int32_t *xz, const int8_t *w, int32_t woff,
                                int32_t blocks, int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    const int8_t *v = w + woff;
#if defined(__OPTIMIZE__) && defined(__thumb2__)
    int32_t xe, xo, ze, zo, t, u, n = blocks >> 1;
    if (n > 0) {
        __asm__ volatile("1:\n\t" SC_DOT16_ASM_BLOCK SC_DOT16_ASM_BLOCK
                         "subs %[n], %[n], #1\n\t"
                         "bne 1b\n\t" SC_DOT16_ASM_OPERANDS);
    }
    if (blocks & 1) {
        __asm__ volatile(SC_DOT16_ASM_BLOCK SC_DOT16_ASM_OPERANDS);
    }
#else
    for (; blocks > 0; --blocks, xz += 4, w += 4, v += 4) {
        const int32_t xe = xz[0], xo = xz[1], ze = xz[2], zo = xz[3];
        const int32_t wv0 = sc_load32(w), wv1 = sc_load32(v);
        int32_t we = __sxtb16(wv0), wo = sc_sxtb16_ror8(wv0);
        a0 = __smlad(xe, we, __smlad(xo, wo, a0));
        b0 = __smlad(ze, we, __smlad(zo, wo, b0));
        we = __sxtb16(wv1);
        wo = sc_sxtb16_ror8(wv1);
        a1 = __smlad(xe, we, __smlad(xo, wo, a1));
        b1 = __smlad(ze, we, __smlad(zo, wo, b1));
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

#endif /* SC_DSP */

/* acc[0] += x . w0, acc[1] += x . w1, acc[2] += z . w0, acc[3] += z . w1 over n bytes,
 * where z = x + zoff and w1 = w0 + woff: four MACs per four loads. ARMv6-M (Cortex-M0+)
 * runs the dense convolution's blocking on it, one multiply per MAC; the DSP path, on the
 * last k % 4 bytes after its int16 blocks. */
static inline void sc_dot_2x2(const int8_t *x, int32_t zoff, const int8_t *w, int32_t woff,
                              int32_t n, int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3], i;
    const int8_t *z = x + zoff, *v = w + woff;
#if SC_BLOCKED && defined(__OPTIMIZE__) && !defined(__OPTIMIZE_SIZE__)
    /* ARMv6-M: the four streams by one index counting down, the four sums in high
     * registers (ADD reaches them), three low registers for the products: 15 instructions
     * per four MACs, where the compiler spills the sums to the stack (25). The sums are the
     * same in any order. At -Os the compiler keeps the high registers to itself: C below. */
    if (n > 0) {
        int32_t t0, t1, t2;
        i = n - 1;
        __asm__ volatile(".syntax unified\n"
                         "1:\n\t"
                         "ldrsb %[t0], [%[x], %[i]]\n\t" /* xv */
                         "ldrsb %[t1], [%[w], %[i]]\n\t" /* w0 */
                         "movs  %[t2], %[t1]\n\t"
                         "muls  %[t2], %[t0]\n\t" /* xv * w0 */
                         "add   %[a0], %[t2]\n\t"
                         "ldrsb %[t2], [%[z], %[i]]\n\t" /* zv */
                         "muls  %[t1], %[t2]\n\t"        /* zv * w0 */
                         "add   %[b0], %[t1]\n\t"
                         "ldrsb %[t1], [%[v], %[i]]\n\t" /* w1 */
                         "muls  %[t0], %[t1]\n\t"        /* xv * w1 */
                         "add   %[a1], %[t0]\n\t"
                         "muls  %[t2], %[t1]\n\t" /* zv * w1 */
                         "add   %[b1], %[t2]\n\t"
                         "subs  %[i], #1\n\t"
                         "bpl   1b\n\t"
                         : [a0] "+h"(a0), [a1] "+h"(a1), [b0] "+h"(b0), [b1] "+h"(b1),
                           [i] "+l"(i), [t0] "=&l"(t0), [t1] "=&l"(t1), [t2] "=&l"(t2)
                         : [x] "l"(x), [z] "l"(z), [w] "l"(w), [v] "l"(v)
                         : "cc");
    }
#elif SC_BLOCKED && defined(__OPTIMIZE__) /* -Os: the high registers are the compiler's */
    (void)i;
    sc_dot_1x2_v6m(x, w, v, n, &a0, &a1);
    sc_dot_1x2_v6m(z, w, v, n, &b0, &b1);
#else
    for (i = 0; i < n; ++i) { /* register-offset loads: one index for four streams */
        const int32_t xv = x[i], zv = z[i], w0 = w[i], w1 = v[i];
        a0 += xv * w0;
        a1 += xv * w1;
        b0 += zv * w0;
        b1 += zv * w1;
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

static inline void sc_copy_dsp(int8_t *dst, const int8_t *src, int32_t n) { /* by words */
    for (; n >= 4; n -= 4, dst += 4, src += 4) {
        const int32_t v = sc_load32(src);
        memcpy(dst, &v, 4);
    }
    for (; n > 0; --n) {
        *dst++ = *src++;
    }
}

static int32_t sc_sum8(const int8_t *w, int32_t n) {
    int32_t s = 0;
    for (; n > 0; --n) {
        s += *w++;
    }
    return s;
}

/* Fill one scratch row, channel-last: input row iy of channels c0 + c for c in [0, cn) (or,
 * where chan is not null, c0 + chan[c]) over the padded columns [0, wp), columns outside
 * the input (or a row outside it) set to in_zp. */
static void sc_fill_row(const int8_t *x, int8_t *row, int32_t iy, int32_t c0,
                        const uint8_t *chan, int32_t cn, int32_t wp, const sc_conv_params *p) {
    const int32_t plane = p->h * p->w;
    int32_t c, col;
    if (iy < 0 || iy >= p->h) {
        memset(row, p->in_zp, (size_t)(wp * cn));
        return;
    }
    for (col = 0; col < wp; ++col) {
        const int32_t ix = col - p->pad_left;
        int8_t *dst = row + col * cn;
        if (ix < 0 || ix >= p->w) {
            memset(dst, p->in_zp, (size_t)cn);
        } else if (chan) {
            const int8_t *src = x + c0 * plane + iy * p->w + ix;
            for (c = 0; c < cn; ++c) {
                dst[c] = src[chan[c] * plane];
            }
        } else {
            const int8_t *src = x + c0 * plane + iy * p->w + ix;
            for (c = 0; c < cn; ++c, src += plane) {
                dst[c] = *src;
            }
        }
    }
}

/* Point rows[ky] at the scratch copy (channel-last, cn channels as sc_fill_row takes
 * them) of the input row that output row oy reads through kernel row ky, filling only the
 * slots that do not hold it yet: without dilation in height, row iy stays in slot iy % kh
 * across output rows (held[slot]: the row a slot holds). */
static void sc_band_rows(const int8_t *x, int8_t *band, const int8_t **rows, int32_t *held,
                         int32_t oy, int32_t c0, const uint8_t *chan, int32_t cn, int32_t wp,
                         const sc_conv_params *p) {
    const int ring = p->dil_h == 1;
    int32_t ky;
    for (ky = 0; ky < p->kh; ++ky) {
        const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dil_h;
        const int32_t slot = ring ? ((iy % p->kh) + p->kh) % p->kh : ky;
        int8_t *row = band + slot * wp * cn;
        if (held[slot] != iy) {
            sc_fill_row(x, row, iy, c0, chan, cn, wp, p);
            held[slot] = ring ? iy : SC_INT32_MIN;
        }
        rows[ky] = row;
    }
}

#define SC_DSP_MAX_KH 64
#define SC_DSP_DW_TAPS 49 /* kernel positions of a sparse depthwise DSP kernel, at most */

/* Per output channel of a group, what its requantization reads, side by side: the zero
 * point's share of the accumulator (in_zp times the sum of its weights), its bias,
 * multiplier and shift. */
typedef struct {
    int32_t wsum, bias, mult, shift;
} sc_channel_rq;

/* Requantize one or two output columns (cols): acc[2 * i] and acc[2 * i + 1] are output
 * channel i's accumulators in the two columns, whose outputs sit plane bytes after channel
 * i - 1's. A loop of its own, so that its few values stay in registers. */
static inline int32_t sc_clamp32(int32_t v, int32_t lo, int32_t hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* One channel of sc_requant_columns, for cols (1 or 2, a constant where inlined) columns. */
static inline void sc_requant_channel(const int32_t *acc, const int cols, const sc_channel_rq *ch,
                                      int8_t *y, int32_t out_zp, int32_t lo, int32_t hi) {
#if SC_DSP
    const int32_t s = ch->shift, m = ch->mult, z = ch->wsum, b = ch->bias;
    int32_t v0 = __qadd(acc[0] - z, b), v1 = cols == 2 ? __qadd(acc[1] - z, b) : 0;
    if (s > 0) {
        v0 = sc_rq_dsp(v0, m, s, 0);
        v1 = cols == 2 ? sc_rq_dsp(v1, m, s, 0) : 0;
    } else {
        const int32_t mask = (int32_t)((1u << -s) - 1u);
        v0 = sc_rq_dsp_mask(v0, m, 0, -s, mask);
        v1 = cols == 2 ? sc_rq_dsp_mask(v1, m, 0, -s, mask) : 0;
    }
#elif SC_BLOCKED
    const int32_t z = ch->wsum, b = ch->bias;
    const int32_t v0 = sc_rq_v6m(sc_qadd_v6m((int32_t)((uint32_t)acc[0] - (uint32_t)z), b),
                                 ch->mult, ch->shift);
    const int32_t v1 = cols == 2 ? sc_rq_v6m(sc_qadd_v6m((int32_t)((uint32_t)acc[1] -
                                                                   (uint32_t)z), b),
                                             ch->mult, ch->shift)
                                 : 0;
#else
    const int32_t v0 = sc_requantize((int64_t)(acc[0] - ch->wsum) + ch->bias, ch->mult,
                                     ch->shift);
    const int32_t v1 = cols == 2 ? sc_requantize((int64_t)(acc[1] - ch->wsum) + ch->bias,
                                                 ch->mult, ch->shift)
                                 : 0;
#endif
    y[0] = (int8_t)sc_clamp32(v0 + out_zp, lo, hi);
    if (cols == 2) {
        y[1] = (int8_t)sc_clamp32(v1 + out_zp, lo, hi);
    }
}

SC_NOINLINE static void sc_requant_columns(const int32_t *acc, int32_t cols,
                                           const sc_channel_rq *ch, int8_t *y, int32_t plane,
                                           int32_t n, const sc_conv_params *p) {
    const int32_t out_zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    const sc_channel_rq *end = ch + n;
    if (cols == 2) {
        for (; ch < end; ++ch, acc += 2, y += plane) {
            sc_requant_channel(acc, 2, ch, y, out_zp, lo, hi);
        }
    } else {
        for (; ch < end; ++ch, acc += 2, y += plane) {
            sc_requant_channel(acc, 1, ch, y, out_zp, lo, hi);
        }
    }
}

/* accs[2 * oc] and accs[2 * oc + 1]: the dot products of output channel oc's k weights
 * (w + oc * k) with the columns x and z = x + zoff, for the n channels, two at a time;
 * split holds both columns as int16 pairs (DSP). A loop of its own, for its registers. */
SC_NOINLINE static void sc_dot_columns(const int32_t *split, const int8_t *x, int32_t zoff,
                                       const int8_t *w, int32_t k, int32_t n, int32_t *accs) {
    int32_t pairs;
    (void)split;
    for (pairs = n >> 1; pairs > 0; --pairs, w += 2 * k, accs += 4) {
        int32_t acc[4] = {0, 0, 0, 0};
#if SC_DSP
        sc_dot16_2x2(split, w, k, k >> 2, acc);
        if (k & 3) { /* the last bytes, one at a time */
            sc_dot_2x2(x + (k & ~3), zoff, w + (k & ~3), k, k & 3, acc);
        }
#else
        sc_dot_2x2(x, zoff, w, k, k, acc);
#endif
        accs[0] = acc[0];
        accs[1] = acc[2];
        accs[2] = acc[1];
        accs[3] = acc[3];
    }
    if (n & 1) { /* the last channel, paired with itself */
        int32_t acc[4] = {0, 0, 0, 0};
#if SC_DSP
        sc_dot16_2x2(split, w, 0, k >> 2, acc);
        if (k & 3) {
            sc_dot_2x2(x + (k & ~3), zoff, w + (k & ~3), 0, k & 3, acc);
        }
#else
        sc_dot_2x2(x, zoff, w, 0, k, acc);
#endif
        accs[0] = acc[0];
        accs[1] = acc[2];
    }
}

/* Scratch: cout/groups int32 weight sums; two columns of cout/groups int32 accumulators;
 * two im2col columns of kh * kw * cin/groups bytes each (rounded up to words); kh rows of
 * wp * cin/groups bytes. Returns 0 (having done nothing) for a kernel taller than
 * SC_DSP_MAX_KH rows. */
static int sc_conv_dsp(const int8_t *x, int8_t *y, const int8_t *w, const int32_t *bias,
                       const int32_t *mult, const int8_t *shift, int32_t *scratch,
                       const sc_conv_params *p) {
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const int32_t wp = (p->ow - 1) * p->stride_w + (p->kw - 1) * p->dil_w + 1;
    const int32_t k = p->kh * p->kw * cin_g;
    const int32_t kcol = (k + 3) & ~3; /* an im2col column, in whole words */
    const int32_t plane = p->oh * p->ow, ow = p->ow;
    const int flat = p->kh == 1 && p->dil_w == 1; /* no im2col copy needed */
    sc_channel_rq *ch = (sc_channel_rq *)scratch;
    int32_t *accs = scratch + 4 * cout_g;
    int32_t *split = accs + 2 * cout_g; /* the two columns as int16 pairs (DSP) */
    int8_t *cols = (int8_t *)(split + kcol);
    int8_t *band = cols + 2 * kcol;
    const int8_t *rows[SC_DSP_MAX_KH];
    int32_t held[SC_DSP_MAX_KH], g, oy, ox, oc, ky, kx, c;
    if (p->kh > SC_DSP_MAX_KH) {
        return 0;
    }
    for (g = 0; g < p->groups; ++g) {
        const int8_t *wg = w + g * cout_g * k;
        for (oc = 0; oc < cout_g; ++oc) {
            const int32_t o = g * cout_g + oc;
            ch[oc].wsum = p->in_zp * sc_sum8(wg + oc * k, k);
            ch[oc].bias = bias[o];
            ch[oc].mult = mult[o];
            ch[oc].shift = shift[o];
        }
        for (ky = 0; ky < p->kh; ++ky) {
            held[ky] = SC_INT32_MIN;
        }
        for (oy = 0; oy < p->oh; ++oy) {
            sc_band_rows(x, band, rows, held, oy, g * cin_g, 0, cin_g, wp, p);
            for (ox = 0; ox < p->ow; ox += 2) {
                const int32_t two_ox = ox + 1 < p->ow;
                const int8_t *col0 = cols;
                int32_t zoff = two_ox ? kcol : 0;
                if (flat) { /* one kernel row: a column's bytes already lie together */
                    col0 = rows[0] + ox * p->stride_w * cin_g;
                    zoff = two_ox ? p->stride_w * cin_g : 0;
                }
                for (c = 0; c < (flat ? 0 : 1 + two_ox); ++c) { /* im2col of ox, ox + 1 */
                    int8_t *dst = cols + c * kcol;
                    for (ky = 0; ky < p->kh; ++ky) {
                        const int8_t *src = rows[ky] + (ox + c) * p->stride_w * cin_g;
                        if (p->dil_w == 1) {
                            sc_copy_dsp(dst, src, p->kw * cin_g);
                            dst += p->kw * cin_g;
                        } else {
                            for (kx = 0; kx < p->kw; ++kx, dst += cin_g) {
                                sc_copy_dsp(dst, src + kx * p->dil_w * cin_g, cin_g);
                            }
                        }
                    }
                }
#if SC_DSP
                sc_expand_2(col0, zoff, k >> 2, split);
#endif
                sc_dot_columns(split, col0, zoff, wg, k, cout_g, accs);
                {
                    const int32_t o0 = g * cout_g;
                    sc_requant_columns(accs, 1 + two_ox, ch, y + o0 * plane + oy * ow + ox,
                                       plane, cout_g, p);
                }
            }
        }
    }
    return 1;
}

#if SC_DSP

/* Copy input plane xc into pad, hp x wp bytes padded with in_zp: the first time (fresh
 * set) the whole buffer is filled with in_zp, after that only the input's own bytes are
 * written, the border staying as it was. */
static void sc_pad_plane(const int8_t *xc, int8_t *pad, int32_t wp, int32_t hp, int fresh,
                         const sc_conv_params *p) {
    const int32_t left = p->pad_left < wp ? p->pad_left : wp;
    const int32_t n = p->w < wp - left ? p->w : wp - left;
    int32_t iy;
    if (fresh) {
        memset(pad, p->in_zp, (size_t)(wp * hp));
    }
    for (iy = 0; iy < p->h; ++iy) {
        const int32_t r = iy + p->pad_top;
        if (r >= 0 && r < hp && n > 0) {
            sc_copy_dsp(pad + r * wp + left, xc + iy * p->w, n);
        }
    }
}

/* Filterlet-sparse convolutions with several input channels per group. */

/* One output channel of a filterlet-sparse layer: its requantization (wsum: in_zp times
 * the sum of its kept weights) and its kept filterlets, [start, start + n). */
typedef struct {
    sc_channel_rq rq;
    int32_t oc, start, n;
} sc_filter_rq;

/* n bytes at x and at z as sc_expand_2 splits them, the last block's missing bytes zero. */
static void sc_expand_2_padded(const int8_t *x, const int8_t *z, int32_t n, int32_t *out) {
    for (; n >= 4; n -= 4, x += 4, z += 4, out += 4) {
        const int32_t xv = sc_load32(x), zv = sc_load32(z);
        out[0] = __sxtb16(xv);
        out[1] = sc_sxtb16_ror8(xv);
        out[2] = __sxtb16(zv);
        out[3] = sc_sxtb16_ror8(zv);
    }
    if (n > 0) {
        uint32_t xv = 0, zv = 0;
        int32_t i;
        for (i = 0; i < n; ++i) {
            xv |= (uint32_t)(uint8_t)x[i] << (8 * i);
            zv |= (uint32_t)(uint8_t)z[i] << (8 * i);
        }
        out[0] = __sxtb16((int32_t)xv);
        out[1] = sc_sxtb16_ror8((int32_t)xv);
        out[2] = __sxtb16((int32_t)zv);
        out[3] = sc_sxtb16_ror8((int32_t)zv);
    }
}

/* acc[0] += x . w, acc[1] += z . w over 4 * blocks bytes of one row w, the columns x and z
 * split by sc_expand_2: one weight word, two SXTB16 and four SMLAD for eight MACs. */
static inline void sc_dot16_2x1(const int32_t *xz, const int8_t *w, int32_t blocks,
                                int32_t *acc) {
    int32_t a = acc[0], b = acc[1];
#if defined(__OPTIMIZE__) && defined(__thumb2__)
    int32_t xe, xo, ze, zo, t, u;
    if (blocks > 0) {
        __asm__ volatile("1:\n\t"
                         "ldrd %[xe], %[xo], [%[p]], #8\n\t"
                         "ldrd %[ze], %[zo], [%[p]], #8\n\t"
                         "ldr %[t], [%[w]], #4\n\t"
                         "sxtb16 %[u], %[t]\n\t"
                         "sxtb16 %[t], %[t], ror #8\n\t"
                         "smlad %[a], %[xe], %[u], %[a]\n\t"
                         "smlad %[a], %[xo], %[t], %[a]\n\t"
                         "smlad %[b], %[ze], %[u], %[b]\n\t"
                         "smlad %[b], %[zo], %[t], %[b]\n\t"
                         "subs %[n], %[n], #1\n\t"
                         "bne 1b\n\t"
                         : [a] "+r"(a), [b] "+r"(b), [p] "+r"(xz), [w] "+r"(w), [n] "+r"(blocks),
                           [xe] "=&r"(xe), [xo] "=&r"(xo), [ze] "=&r"(ze), [zo] "=&r"(zo),
                           [t] "=&r"(t), [u] "=&r"(u)
                         :
                         : "cc", "memory");
    }
#else
    for (; blocks > 0; --blocks, xz += 4, w += 4) {
        const int32_t wv = sc_load32(w);
        const int32_t we = __sxtb16(wv), wo = sc_sxtb16_ror8(wv);
        a = __smlad(xz[0], we, __smlad(xz[1], wo, a));
        b = __smlad(xz[2], we, __smlad(xz[3], wo, b));
    }
#endif
    acc[0] = a;
    acc[1] = b;
}

/* Each output channel's kept filterlets against two output columns at a time. The kh
 * input rows a kernel reads are copied channel-last as in sc_conv_dsp, only the live
 * channels; for each pair of columns, every kernel position's live bytes are split into
 * int16 pairs once (padded with zeros to whole words), so a filterlet is a dot product of
 * (live + 3) / 4 blocks, whatever its position. A filter with no filterlet is its fill
 * byte, written once. The weights are read in whole words: the export pads vals to a
 * word. Scratch: a sc_filter_rq per output channel; the split columns, 16 bytes per block
 * per kernel position; kh rows of wp * live bytes; 4 bytes. */
static void sc_conv_filterlet_dsp(const int8_t *x, int8_t *y, const int8_t *vals,
                                  const uint8_t *col, const uint8_t *count,
                                  const uint8_t *chan, const int32_t *bias,
                                  const int32_t *mult, const int8_t *shift, const int8_t *fill,
                                  int32_t *scratch, const sc_conv_params *p) {
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const int32_t live = p->live, blocks = (live + 3) >> 2, taps = p->kh * p->kw;
    const int32_t wp = (p->ow - 1) * p->stride_w + (p->kw - 1) * p->dil_w + 1;
    const int32_t plane = p->oh * p->ow;
    const int32_t out_zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    sc_filter_rq *tab = (sc_filter_rq *)scratch; /* the filters with filterlets, in order */
    int32_t *split = scratch + 7 * p->cout;
    int8_t *band = (int8_t *)(split + 4 * blocks * taps);
    const int8_t *rows[SC_DSP_MAX_KH];
    const sc_filter_rq *f, *group_end = tab;
    int32_t held[SC_DSP_MAX_KH], g, oc, oy, ox, ky, kx, r, start = 0, k = 0;
    for (oc = 0; oc < p->cout; ++oc) { /* per filter: requantization, filterlets, fill */
        const int32_t n = taps <= 15 ? (count[oc >> 1] >> ((oc & 1) << 2)) & 15 : count[oc];
        if (n == 0) {
            memset(y + oc * plane, *fill++, (size_t)plane);
            continue;
        }
        tab[k].oc = oc;
        tab[k].start = start;
        tab[k].n = n;
        tab[k].rq.wsum = p->in_zp * sc_sum8(vals + start * live, n * live);
        tab[k].rq.bias = bias[k];
        tab[k].rq.mult = mult[k];
        tab[k].rq.shift = shift[k];
        start += n;
        ++k;
    }
    for (g = 0; g < p->groups; ++g) {
        const sc_filter_rq *group_start = group_end;
        while (group_end < tab + k && group_end->oc < (g + 1) * cout_g) {
            ++group_end;
        }
        if (group_start == group_end) {
            continue;
        }
        for (ky = 0; ky < p->kh; ++ky) {
            held[ky] = SC_INT32_MIN;
        }
        for (oy = 0; oy < p->oh; ++oy) {
            sc_band_rows(x, band, rows, held, oy, g * cin_g, chan, live, wp, p);
            for (ox = 0; ox < p->ow; ox += 2) {
                const int32_t cols = ox + 1 < p->ow ? 2 : 1;
                for (ky = 0; ky < p->kh; ++ky) { /* split every kernel position's bytes */
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int8_t *at = rows[ky] + (ox * p->stride_w + kx * p->dil_w) * live;
                        sc_expand_2_padded(at, cols == 2 ? at + p->stride_w * live : at, live,
                                           split + (ky * p->kw + kx) * blocks * 4);
                    }
                }
                for (f = group_start; f < group_end; ++f) {
                    const int8_t *wr = vals + f->start * live;
                    int8_t *yo = y + f->oc * plane + oy * p->ow + ox;
                    int32_t acc[2] = {0, 0};
                    for (r = f->start; r < f->start + f->n; ++r, wr += live) {
                        const int32_t t = taps == 1 ? 0 : col[r];
                        sc_dot16_2x1(split + t * blocks * 4, wr, blocks, acc);
                    }
                    if (cols == 2) {
                        sc_requant_channel(acc, 2, &f->rq, yo, out_zp, lo, hi);
                    } else {
                        sc_requant_channel(acc, 1, &f->rq, yo, out_zp, lo, hi);
                    }
                }
            }
        }
    }
}

/* Filterlet-sparse depthwise convolutions: one weight per kept kernel position. */

/* y[i] = the requantized acc[i] + bias for one channel's row of n accumulators (the zero
 * point's share already taken out). A loop of its own, so that its values stay in
 * registers. */
SC_NOINLINE static void sc_requant_row(const int32_t *acc, int8_t *y, int32_t n, int32_t bias,
                                       int32_t mult, int32_t shift, int32_t out_zp, int32_t lo,
                                       int32_t hi) {
    const int32_t *end = acc + n;
    if (shift > 0) {
        for (; acc < end; ++acc, ++y) {
            *y = (int8_t)sc_clamp32(sc_rq_dsp(__qadd(*acc, bias), mult, shift, 0) + out_zp, lo, hi);
        }
    } else {
        const int32_t right = -shift, mask = (int32_t)((1u << right) - 1u);
        for (; acc < end; ++acc, ++y) {
            *y = (int8_t)sc_clamp32(sc_rq_dsp_mask(__qadd(*acc, bias), mult, 0, right, mask) + out_zp,
                                    lo, hi);
        }
    }
}

/* One output row's accumulators of a sparse depthwise channel with n (a constant where
 * inlined, 1 to 3) kept positions at byte offsets o0.. of the padded plane, weights w0..:
 * n loads and multiply-adds per output, less the zero point's share. */
static inline void sc_dw_sparse_row(const int8_t *b, int32_t *acc, int32_t ow, int32_t sw,
                                    const int n, int32_t o0, int32_t o1, int32_t o2, int32_t w0,
                                    int32_t w1, int32_t w2, int32_t wsum) {
    const int32_t *end = acc + ow;
    for (; acc < end; ++acc, b += sw) {
        int32_t a = b[o0] * w0 - wsum;
        if (n > 1) {
            a += b[o1] * w1;
        }
        if (n > 2) {
            a += b[o2] * w2;
        }
        *acc = a;
    }
}

/* Each output channel's kept kernel positions over its input plane, padded with in_zp as
 * in sc_conv_dsp_depthwise (the plane copied once per group), a row of accumulators at a
 * time, then requantized. Channels with one to three kept positions run unrolled rows;
 * more, a loop over them. Scratch: ow int32 accumulators, the padded plane (hp x wp
 * bytes), and 4 bytes. */
static void sc_conv_filterlet_dsp_depthwise(const int8_t *x, int8_t *y, const int8_t *vals,
                                            const uint8_t *col, const uint8_t *count,
                                            const int32_t *bias, const int32_t *mult,
                                            const int8_t *shift, const int8_t *fill,
                                            int32_t *acc, const sc_conv_params *p) {
    const int32_t cout_g = p->cout / p->groups, taps = p->kh * p->kw, live = p->live;
    const int32_t wp = (p->ow - 1) * p->stride_w + (p->kw - 1) * p->dil_w + 1;
    const int32_t hp = (p->oh - 1) * p->stride_h + (p->kh - 1) * p->dil_h + 1;
    const int32_t plane = p->oh * p->ow, sw = p->stride_w;
    const int32_t out_zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    int8_t *pad = (int8_t *)(acc + p->ow); /* after a row of accumulators */
    int32_t oc, oy, i, r = 0, k = 0, loaded = -1;
    for (oc = 0; oc < p->cout; ++oc) {
        const int32_t n = taps <= 15 ? (count[oc >> 1] >> ((oc & 1) << 2)) & 15 : count[oc];
        const int32_t g = oc / cout_g;
        int32_t off[SC_DSP_DW_TAPS], wt[SC_DSP_DW_TAPS], wsum = 0;
        if (n == 0) {
            memset(y + oc * plane, *fill++, (size_t)plane);
            continue;
        }
        if (g != loaded) { /* the group's input plane, padded */
            sc_pad_plane(x + g * p->h * p->w, pad, wp, hp, loaded < 0, p);
            loaded = g;
        }
        for (i = 0; i < n; ++i) {
            const int32_t t = taps == 1 ? 0 : col[r + i], ky = t / p->kw;
            off[i] = ky * p->dil_h * wp + (t - ky * p->kw) * p->dil_w;
            wt[i] = vals[(r + i) * live];
            wsum += wt[i];
        }
        wsum *= p->in_zp;
        for (oy = 0; oy < p->oh; ++oy) {
            const int8_t *b = pad + oy * p->stride_h * wp;
            if (n == 1) {
                sc_dw_sparse_row(b, acc, p->ow, sw, 1, off[0], 0, 0, wt[0], 0, 0, wsum);
            } else if (n == 2) {
                sc_dw_sparse_row(b, acc, p->ow, sw, 2, off[0], off[1], 0, wt[0], wt[1], 0, wsum);
            } else if (n == 3) {
                sc_dw_sparse_row(b, acc, p->ow, sw, 3, off[0], off[1], off[2], wt[0], wt[1],
                                 wt[2], wsum);
            } else {
                int32_t ox;
                for (ox = 0; ox < p->ow; ++ox, b += sw) {
                    int32_t a = -wsum;
                    for (i = 0; i < n; ++i) {
                        a += b[off[i]] * wt[i];
                    }
                    acc[ox] = a;
                }
            }
            sc_requant_row(acc, y + oc * plane + oy * p->ow, p->ow, bias[k], mult[k], shift[k],
                           out_zp, lo, hi);
        }
        r += n;
        ++k;
    }
}

#define SC_DW_CHUNK 64 /* accumulators a depthwise channel fills before requantizing */
#define SC_DW_SMALL 4 /* output planes at most this large list their kernel positions */
#define SC_DW4_PLANE 4 /* four channels at a time: output planes up to this large, */
#define SC_DW4_INPUT 63 /* input planes up to this large (byte offsets of words), */
#define SC_DW4_TAPS 25 /* and kernels up to 5x5 */

/* Accumulators of a 3x3 depthwise channel (dilation 1) for rows output rows of ow columns:
 * acc = init + the dot products of the padded plane at r0 (wp bytes a row, the rows sh
 * apart, the columns sw) with the kernel (a, b, c: (w0, w2) of its rows as int16 pairs;
 * a1, b1, c1: the middle column): three words, three SMLAD and three SMLABB an output. */
SC_NOINLINE static void sc_dw3x3_acc(const int8_t *r0, int32_t wp, int32_t sh, int32_t sw,
                                     int32_t rows, int32_t ow, const int32_t *k, int32_t init,
                                     int32_t *acc) {
    const int32_t a = k[0], b = k[1], c = k[2], a1 = k[3], b1 = k[4], c1 = k[5];
    int32_t oy, ox;
    for (oy = 0; oy < rows; ++oy, r0 += sh * wp) {
        const int8_t *r = r0;
        for (ox = 0; ox < ow; ++ox, r += sw) {
            const int32_t v0 = sc_load32(r), v1 = sc_load32(r + wp), v2 = sc_load32(r + 2 * wp);
            int32_t t = __smlad(__sxtb16(v0), a, init);
            t = __smlabb(sc_sxtb16_ror8(v0), a1, t);
            t = __smlad(__sxtb16(v1), b, t);
            t = __smlabb(sc_sxtb16_ror8(v1), b1, t);
            t = __smlad(__sxtb16(v2), c, t);
            *acc++ = __smlabb(sc_sxtb16_ror8(v2), c1, t);
        }
    }
}

/* y[i] = acc[i] (the zero point's share already out) plus bias, requantized, for the n
 * outputs of one channel; inlined where a small plane's few outputs cost less than a
 * call (sc_requant_row is the called form). */
static inline void sc_requant_plane(const int32_t *acc, int8_t *y, int32_t n, int32_t bias,
                                    int32_t mult, int32_t shift, const sc_conv_params *p) {
    const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int32_t mask = (int32_t)((1u << right) - 1u);
    const int32_t out_zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t v = sc_rq_dsp_mask(__qadd(acc[i], bias), mult, left, right, mask);
        y[i] = (int8_t)sc_clamp32(v + out_zp, lo, hi);
    }
}

/* For each output position of a depthwise layer, in order: the count of its kernel
 * positions inside the input, then per position its input offset (iy * w + ix) times
 * in_scale and its kernel index (ky * kw + kx) times tap_scale, a byte each. */
static void sc_tap_list(uint8_t *at, int32_t in_scale, int32_t tap_scale,
                        const sc_conv_params *p) {
    int32_t oy, ox, ky, kx;
    for (oy = 0; oy < p->oh; ++oy) {
        for (ox = 0; ox < p->ow; ++ox) {
            uint8_t *n = at++;
            *n = 0;
            for (ky = 0; ky < p->kh; ++ky) {
                const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dil_h;
                for (kx = 0; kx < p->kw; ++kx) {
                    const int32_t ix = ox * p->stride_w - p->pad_left + kx * p->dil_w;
                    if (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w) {
                        *at++ = (uint8_t)(in_scale * (iy * p->w + ix));
                        *at++ = (uint8_t)(tap_scale * (ky * p->kw + kx));
                        ++*n;
                    }
                }
            }
        }
    }
}

/* A depthwise layer whose output planes are small (at most SC_DW_SMALL values): copying
 * and padding each channel's input plane costs more than its few outputs, so each output
 * position's kernel positions inside the input are listed once for the layer (an input
 * offset and a weight index, two bytes each) and every channel walks that list. Scratch:
 * SC_DW_SMALL int32 accumulators, then the list. */
SC_NOINLINE static void sc_conv_dsp_depthwise_small(const int8_t *x, int8_t *y, const int8_t *w,
                                        const int32_t *bias, const int32_t *mult,
                                        const int8_t *shift, int32_t *acc,
                                        const sc_conv_params *p) {
    const int32_t cout_g = p->cout / p->groups, taps = p->kh * p->kw;
    const int32_t plane = p->oh * p->ow, zp = p->in_zp;
    uint8_t *list = (uint8_t *)(acc + SC_DW_SMALL);
    int32_t oc, i;
    sc_tap_list(list, 1, 1, p);
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *xc = x + (oc / cout_g) * p->h * p->w, *wc = w + oc * taps;
        const uint8_t *t = list;
        for (i = 0; i < plane; ++i) {
            const uint8_t *end = t + 1 + 2 * t[0];
            int32_t a = 0;
            for (++t; t < end; t += 2) {
                a += (xc[t[0]] - zp) * wc[t[1]];
            }
            acc[i] = a;
        }
        sc_requant_plane(acc, y + oc * plane, plane, bias[oc], mult[oc], shift[oc], p);
    }
}

/* The bytes b[0], b[stride], ... of n (1 to 4) channels in one word, channel 0 lowest, the
 * missing ones zero. */
static inline int32_t sc_gather4(const int8_t *b, int32_t stride, int32_t n) {
    uint32_t v;
    int32_t k;
    if (n == 4) {
        return (int32_t)((uint32_t)(uint8_t)b[0] | ((uint32_t)(uint8_t)b[stride] << 8) |
                         ((uint32_t)(uint8_t)b[2 * stride] << 16) |
                         ((uint32_t)(uint8_t)b[3 * stride] << 24));
    }
    for (v = 0, k = 0; k < n; ++k) {
        v |= (uint32_t)(uint8_t)b[k * stride] << (8 * k);
    }
    return (int32_t)v;
}

/* A depthwise layer (one output channel per input channel) on small planes: four channels
 * at a time, as CMSIS-NN's channel-last kernels take them. Each input position's four
 * bytes are gathered into a word and each kernel position's four weights split into int16
 * pairs once per four channels; every output then walks the list of its kernel positions
 * inside the input (built once for the layer, as byte offsets), one word load, two SXTB16, two SSUB16 (the
 * zero point) and four SMLAxy per position for four MACs. Scratch: 4 x SC_DW4_PLANE
 * accumulators, a gathered word per input position, two words per kernel position, then
 * the list (a count per output, two bytes per kernel position inside the input). */
SC_NOINLINE static void sc_dw_4ch(const int8_t *x, int8_t *y, const int8_t *w,
                                  const int32_t *bias, const int32_t *mult, const int8_t *shift,
                                  int32_t *scratch, const sc_conv_params *p) {
    const int32_t plane = p->oh * p->ow, hw = p->h * p->w, taps = p->kh * p->kw;
    const int32_t channels = p->cout;
    const int32_t zp = (int32_t)(((uint32_t)(uint16_t)p->in_zp) * 0x10001u);
    int32_t *acc = scratch, *xin = acc + 4 * SC_DW4_PLANE, *wt = xin + hw;
    uint8_t *list = (uint8_t *)(wt + 2 * taps);
    int32_t c0, i, k;
    sc_tap_list(list, 4, 8, p); /* byte offsets of words: no multiply */
    for (c0 = 0; c0 < channels; c0 += 4) {
        const int32_t n = channels - c0 < 4 ? channels - c0 : 4;
        const uint8_t *l = list;
        for (i = 0; i < hw; ++i) { /* four channels' bytes of each input position */
            xin[i] = sc_gather4(x + c0 * hw + i, hw, n);
        }
        for (i = 0; i < taps; ++i) { /* and of each kernel position's weights */
            const int32_t v = sc_gather4(w + c0 * taps + i, taps, n);
            wt[2 * i] = __sxtb16(v);
            wt[2 * i + 1] = sc_sxtb16_ror8(v);
        }
        for (i = 0; i < plane; ++i) { /* channels c0, c0 + 2 in even halves, c0 + 1, c0 + 3 odd */
            const uint8_t *end = l + 1 + 2 * l[0];
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (++l; l < end; l += 2) {
                const int32_t xv = *(const int32_t *)((const uint8_t *)xin + l[0]);
                const int32_t *wp = (const int32_t *)((const uint8_t *)wt + l[1]);
                const int32_t xe = __ssub16(__sxtb16(xv), zp), xo = __ssub16(sc_sxtb16_ror8(xv), zp);
                const int32_t we = wp[0], wo = wp[1];
                a0 = __smlabb(xe, we, a0);
                a2 = __smlatt(xe, we, a2);
                a1 = __smlabb(xo, wo, a1);
                a3 = __smlatt(xo, wo, a3);
            }
            acc[i] = a0;
            acc[SC_DW4_PLANE + i] = a1;
            acc[2 * SC_DW4_PLANE + i] = a2;
            acc[3 * SC_DW4_PLANE + i] = a3;
        }
        for (k = 0; k < n; ++k) {
            const int32_t c = c0 + k;
            sc_requant_plane(acc + k * SC_DW4_PLANE, y + c * plane, plane, bias[c], mult[c],
                             shift[c], p);
        }
    }
}

/* One input channel per group (depthwise, with any channel multiplier). Each output
 * channel: accumulators for as many whole rows as SC_DW_CHUNK holds (one row at least),
 * then those rows requantized (sc_requant_row), so that small planes pay the per-call
 * costs once per channel. Scratch: max(ow, SC_DW_CHUNK) int32 accumulators, the group's
 * input plane padded with in_zp (hp x wp bytes), and 4 bytes of slack for the word loads
 * at its end. */
SC_NOINLINE static void sc_conv_dsp_depthwise(const int8_t *x, int8_t *y, const int8_t *w,
                                  const int32_t *bias, const int32_t *mult,
                                  const int8_t *shift, int32_t *acc, const sc_conv_params *p) {
    const int32_t cout_g = p->cout / p->groups;
    const int32_t wp = (p->ow - 1) * p->stride_w + (p->kw - 1) * p->dil_w + 1;
    const int32_t hp = (p->oh - 1) * p->stride_h + (p->kh - 1) * p->dil_h + 1;
    const int32_t taps = p->kh * p->kw, plane = p->oh * p->ow;
    const int32_t chunk = p->ow >= SC_DW_CHUNK ? 1 : SC_DW_CHUNK / p->ow; /* rows a pass */
    const int three = p->kw == 3 && p->kh == 3 && p->dil_w == 1 && p->dil_h == 1;
    int8_t *pad = (int8_t *)(acc + (p->ow > SC_DW_CHUNK ? p->ow : SC_DW_CHUNK));
    int32_t g, oc, oy, ox, ky, kx, rows;
    if (p->cout == p->cin && plane <= SC_DW4_PLANE && p->h * p->w <= SC_DW4_INPUT &&
        taps <= SC_DW4_TAPS) {
        sc_dw_4ch(x, y, w, bias, mult, shift, acc, p);
        return;
    }
    if (plane <= SC_DW_SMALL && p->h * p->w <= 256 && taps <= 255) {
        sc_conv_dsp_depthwise_small(x, y, w, bias, mult, shift, acc, p);
        return;
    }
    for (g = 0; g < p->groups; ++g) {
        sc_pad_plane(x + g * p->h * p->w, pad, wp, hp, g == 0, p);
        for (oc = g * cout_g; oc < (g + 1) * cout_g; ++oc) {
            const int8_t *wc = w + oc * taps;
            const int32_t zsum = p->in_zp * sc_sum8(wc, taps);
            int32_t k[6];
            if (three) { /* per kernel row (w0, w2) as int16 pairs, then the middle column */
                for (ky = 0; ky < 3; ++ky) {
                    k[ky] = (int32_t)(((uint32_t)(uint16_t)wc[ky * 3]) |
                                      ((uint32_t)(uint16_t)wc[ky * 3 + 2] << 16));
                    k[3 + ky] = wc[ky * 3 + 1];
                }
            }
            for (oy = 0; oy < p->oh; oy += rows) {
                const int8_t *base = pad + oy * p->stride_h * wp;
                rows = p->oh - oy < chunk ? p->oh - oy : chunk;
                if (three) {
                    sc_dw3x3_acc(base, wp, p->stride_h, p->stride_w, rows, p->ow, k, -zsum, acc);
                } else {
                    int32_t *a = acc, r;
                    for (r = 0; r < rows; ++r, base += p->stride_h * wp) {
                        for (ox = 0; ox < p->ow; ++ox) {
                            const int8_t *xp = base + ox * p->stride_w;
                            int32_t t = -zsum;
                            for (ky = 0; ky < p->kh; ++ky, xp += p->dil_h * wp) {
                                const int8_t *wk = wc + ky * p->kw;
                                for (kx = 0; kx < p->kw; ++kx) {
                                    t += xp[kx * p->dil_w] * wk[kx];
                                }
                            }
                            *a++ = t;
                        }
                    }
                }
                sc_requant_row(acc, y + oc * plane + oy * p->ow, rows * p->ow, bias[oc], mult[oc],
                               shift[oc], p->out_zp, p->act_min, p->act_max);
            }
        }
    }
}

/* The larger of each pair of signed bytes of a and b (SSUB8 sets the GE flags, SEL picks). */
static inline int32_t sc_max4(int32_t a, int32_t b) {
    (void)__ssub8(a, b);
    return (int32_t)__sel((uint32_t)a, (uint32_t)b);
}

/* 2x2 max pooling, stride 2, every window inside the input: two rows' maxima four bytes
 * at a time, then each pair of neighbours': two outputs per word. */
static void sc_max_pool_2x2_dsp(const int8_t *x, int8_t *y, const sc_pool_params *p) {
    int32_t c, oy, ox;
    for (c = 0; c < p->c; ++c) {
        const int8_t *xc = x + c * p->h * p->w;
        for (oy = 0; oy < p->oh; ++oy, y += p->ow) {
            const int8_t *r0 = xc + 2 * oy * p->w, *r1 = r0 + p->w;
            for (ox = 0; ox + 2 <= p->ow; ox += 2) {
                const int32_t v = sc_max4(sc_load32(r0 + 2 * ox), sc_load32(r1 + 2 * ox));
                const int32_t h = sc_max4(v, (int32_t)((uint32_t)v >> 8));
                y[ox] = (int8_t)h;
                y[ox + 1] = (int8_t)(h >> 16);
            }
            for (; ox < p->ow; ++ox) {
                const int8_t *a = r0 + 2 * ox, *b = r1 + 2 * ox;
                const int32_t m0 = a[0] > a[1] ? a[0] : a[1], m1 = b[0] > b[1] ? b[0] : b[1];
                y[ox] = (int8_t)(m0 > m1 ? m0 : m1);
            }
        }
    }
}

/* Element-wise add of two tensors of the same shape (no broadcast), as sc_add */
static void sc_add_dsp(const int8_t *a, const int8_t *b, int8_t *y, const sc_binary_params *p) {
    const int32_t al = p->a_shift > 0 ? p->a_shift : 0, ar = p->a_shift > 0 ? 0 : -p->a_shift;
    const int32_t bl = p->b_shift > 0 ? p->b_shift : 0, br = p->b_shift > 0 ? 0 : -p->b_shift;
    const int32_t yl = p->out_shift > 0 ? p->out_shift : 0;
    const int32_t yr = p->out_shift > 0 ? 0 : -p->out_shift;
    const int32_t am = (int32_t)((1u << ar) - 1u), bm = (int32_t)((1u << br) - 1u);
    const int32_t ym = (int32_t)((1u << yr) - 1u);
    const int32_t azp = p->a_zp, bzp = p->b_zp, amult = p->a_mult, bmult = p->b_mult;
    const int32_t out_zp = p->out_zp, lo = p->act_min, hi = p->act_max, n = p->count;
    int32_t i;
    if (al == 0 && bl == 0 && yl == 0) { /* right shifts only, as scales below one give */
        for (i = 0; i < n; ++i) {
            const int32_t sa = sc_rq_dsp_mask((a[i] - azp) * (1 << 20), amult, 0, ar, am);
            const int32_t sb = sc_rq_dsp_mask((b[i] - bzp) * (1 << 20), bmult, 0, br, bm);
            y[i] = (int8_t)sc_clamp32(
                sc_rq_dsp_mask(__qadd(sa, sb), p->out_mult, 0, yr, ym) + out_zp, lo, hi);
        }
        return;
    }
    for (i = 0; i < n; ++i) {
        const int32_t sa = sc_rq_dsp_mask((a[i] - azp) * (1 << 20), amult, al, ar, am);
        const int32_t sb = sc_rq_dsp_mask((b[i] - bzp) * (1 << 20), bmult, bl, br, bm);
        y[i] = (int8_t)sc_clamp32(
            sc_rq_dsp_mask(__qadd(sa, sb), p->out_mult, yl, yr, ym) + out_zp, lo, hi);
    }
}

static inline int8_t sc_linear_out(int32_t acc, int32_t o, const int32_t *bias,
                                   const int32_t *mult, const int8_t *shift,
                                   const sc_linear_params *p) {
#if SC_LITERT_ROUNDING
    const int32_t v = SC_REQUANTIZE_LINEAR((int64_t)acc + bias[o], mult[o], shift[o]);
#else
    const int32_t s = shift[o];
    const int32_t v = sc_rq_dsp(__qadd(acc, bias[o]), mult[o], s > 0 ? s : 0, s > 0 ? 0 : -s);
#endif
    return sc_clamp8(v + p->out_zp, p->act_min, p->act_max);
}

/* Two output rows of a fully connected layer; ``off`` (the input zero point negated, in
 * both halves of a word) is taken out in int16 pairs unless ``with_zp`` is 0 (folded into
 * the biases at export). Inlined with a constant ``with_zp``, each use gets its own loop. */
static inline void sc_linear_rows2(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t n,
                                   int32_t off, int32_t zp, const int with_zp, int32_t *acc) {
    int32_t a0 = 0, a1 = 0, i;
    for (i = 0; i + 4 <= n; i += 4) {
        const int32_t xv = sc_load32(x + i);
        int32_t xe = __sxtb16(xv), xo = sc_sxtb16_ror8(xv);
        const int32_t v0 = sc_load32(w0 + i), v1 = sc_load32(w1 + i);
        if (with_zp) {
            xe = __sadd16(xe, off);
            xo = __sadd16(xo, off);
        }
        a0 = __smlad(xe, __sxtb16(v0), __smlad(xo, sc_sxtb16_ror8(v0), a0));
        a1 = __smlad(xe, __sxtb16(v1), __smlad(xo, sc_sxtb16_ror8(v1), a1));
    }
    for (; i < n; ++i) {
        a0 += ((int32_t)x[i] - zp) * w0[i];
        a1 += ((int32_t)x[i] - zp) * w1[i];
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* Fully connected. Where the export folded the input zero point into the biases (in_zp 0),
 * four output rows at a time share each word of the input; otherwise two, the zero point
 * taken out in int16 pairs (SADD16). */
static void sc_linear_dsp(const int8_t *x, int8_t *y, const int8_t *w, const int32_t *bias,
                          const int32_t *mult, const int8_t *shift, const sc_linear_params *p) {
    const int32_t n = p->in_features, outs = p->out_features;
    const int32_t off = (int32_t)(((uint32_t)(uint16_t)(-p->in_zp)) * 0x10001u);
    int32_t o = 0, i;
    if (p->in_zp == 0) {
        for (; o + 4 <= outs; o += 4) {
            const int8_t *w0 = w + o * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, v;
            for (i = 0; i + 4 <= n; i += 4) {
                const int32_t xv = sc_load32(x + i);
                const int32_t xe = __sxtb16(xv), xo = sc_sxtb16_ror8(xv);
                v = sc_load32(w0 + i);
                a0 = __smlad(xe, __sxtb16(v), __smlad(xo, sc_sxtb16_ror8(v), a0));
                v = sc_load32(w1 + i);
                a1 = __smlad(xe, __sxtb16(v), __smlad(xo, sc_sxtb16_ror8(v), a1));
                v = sc_load32(w2 + i);
                a2 = __smlad(xe, __sxtb16(v), __smlad(xo, sc_sxtb16_ror8(v), a2));
                v = sc_load32(w3 + i);
                a3 = __smlad(xe, __sxtb16(v), __smlad(xo, sc_sxtb16_ror8(v), a3));
            }
            for (; i < n; ++i) {
                a0 += x[i] * w0[i];
                a1 += x[i] * w1[i];
                a2 += x[i] * w2[i];
                a3 += x[i] * w3[i];
            }
            y[o] = sc_linear_out(a0, o, bias, mult, shift, p);
            y[o + 1] = sc_linear_out(a1, o + 1, bias, mult, shift, p);
            y[o + 2] = sc_linear_out(a2, o + 2, bias, mult, shift, p);
            y[o + 3] = sc_linear_out(a3, o + 3, bias, mult, shift, p);
        }
    }
    for (; o < outs; o += 2) {
        const int32_t two = o + 1 < outs;
        const int8_t *w0 = w + o * n, *w1 = two ? w0 + n : w0;
        int32_t acc[2];
        if (p->in_zp == 0) {
            sc_linear_rows2(x, w0, w1, n, 0, 0, 0, acc);
        } else {
            sc_linear_rows2(x, w0, w1, n, off, p->in_zp, 1, acc);
        }
        y[o] = sc_linear_out(acc[0], o, bias, mult, shift, p);
        if (two) {
            y[o + 1] = sc_linear_out(acc[1], o + 1, bias, mult, shift, p);
        }
    }
}

#endif /* SC_DSP */
