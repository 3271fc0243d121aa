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
 * doubling high multiply as one SMLAL onto 2^30, then the rounding right shift. */
static inline int32_t sc_rq_dsp(int32_t x, int32_t mult, int32_t left, int32_t right) {
    const int64_t prod = (int64_t)1 << 30;
    int32_t v, mask;
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
    mask = (int32_t)((1u << right) - 1u);
    return (v >> right) + ((v & mask) > ((mask >> 1) + (v < 0)));
}

static inline int8_t sc_out_dsp(int32_t acc, int32_t bias, int32_t mult, int32_t left,
                                int32_t right, const sc_conv_params *p) {
    return sc_clamp8(sc_rq_dsp(__qadd(acc, bias), mult, left, right) + p->out_zp, p->act_min,
                     p->act_max);
}

/* acc[0] += x . w0, acc[1] += x . w1, acc[2] += z . w0, acc[3] += z . w1 over n bytes,
 * where z = x + zoff and w1 = w0 + woff */
static inline void sc_dot_2x2(const int8_t *x, int32_t zoff, const int8_t *w, int32_t woff,
                              int32_t n, int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    const int8_t *end = x + (n & ~3);
    while (x < end) {
        const int32_t xv = sc_load32(x), zv = sc_load32(x + zoff);
        const int32_t wv0 = sc_load32(w), wv1 = sc_load32(w + woff);
        const int32_t xe = __sxtb16(xv), xo = sc_sxtb16_ror8(xv);
        const int32_t ze = __sxtb16(zv), zo = sc_sxtb16_ror8(zv);
        int32_t we = __sxtb16(wv0), wo = sc_sxtb16_ror8(wv0);
        a0 = __smlad(xe, we, __smlad(xo, wo, a0));
        b0 = __smlad(ze, we, __smlad(zo, wo, b0));
        we = __sxtb16(wv1);
        wo = sc_sxtb16_ror8(wv1);
        a1 = __smlad(xe, we, __smlad(xo, wo, a1));
        b1 = __smlad(ze, we, __smlad(zo, wo, b1));
        x += 4;
        w += 4;
    }
    for (n &= 3; n > 0; --n, ++x, ++w) {
        a0 += x[0] * w[0];
        a1 += x[0] * w[woff];
        b0 += x[zoff] * w[0];
        b1 += x[zoff] * w[woff];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

#else /* ARMv6-M (Cortex-M0+): no SIMD; the same blocking, one multiply per MAC */

/* acc[0] += x . w0, acc[1] += x . w1, acc[2] += z . w0, acc[3] += z . w1 over n bytes,
 * where z = x + zoff and w1 = w0 + woff: four MACs per four loads */
static inline void sc_dot_2x2(const int8_t *x, int32_t zoff, const int8_t *w, int32_t woff,
                              int32_t n, int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3], i;
    const int8_t *z = x + zoff, *v = w + woff;
    for (i = 0; i < n; ++i) { /* register-offset loads: one index for four streams */
        const int32_t xv = x[i], zv = z[i], w0 = w[i], w1 = v[i];
        a0 += xv * w0;
        a1 += xv * w1;
        b0 += zv * w0;
        b1 += zv * w1;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

#endif /* SC_DSP */

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

/* Fill one scratch row, channel-last: input row iy of channels [c0, c0 + cn) over the
 * padded columns [0, wp), columns outside the input (or a row outside it) set to in_zp. */
static void sc_fill_row(const int8_t *x, int8_t *row, int32_t iy, int32_t c0, int32_t cn,
                        int32_t wp, const sc_conv_params *p) {
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
        } else {
            const int8_t *src = x + (c0 * p->h + iy) * p->w + ix;
            for (c = 0; c < cn; ++c, src += p->h * p->w) {
                dst[c] = *src;
            }
        }
    }
}

#define SC_DSP_MAX_KH 64

/* Requantize one output column: n accumulators (acc[i] for output channel i, which sits
 * plane bytes after channel i - 1) less the zero point's share, with their per-channel
 * biases, multipliers and shifts. A loop of its own, so that its few values stay in
 * registers. */
static void sc_requant_column(const int32_t *acc, const int32_t *wsum, const int32_t *bias,
                              const int32_t *mult, const int8_t *shift, int8_t *y,
                              int32_t plane, int32_t n, int32_t out_zp, int32_t lo,
                              int32_t hi) {
    int32_t i;
    for (i = 0; i < n; ++i, y += plane) {
#if SC_DSP
        const int32_t s = shift[i];
        const int32_t v = sc_rq_dsp(__qadd(acc[i] - wsum[i], bias[i]), mult[i], s > 0 ? s : 0,
                                    s > 0 ? 0 : -s);
#else
        const int32_t v = sc_requantize((int64_t)(acc[i] - wsum[i]) + bias[i], mult[i], shift[i]);
#endif
        *y = sc_clamp8(v + out_zp, lo, hi);
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
    const int32_t row_bytes = wp * cin_g, k = p->kh * p->kw * cin_g;
    const int32_t kcol = (k + 3) & ~3; /* an im2col column, in whole words */
    const int32_t plane = p->oh * p->ow;
    const int ring = p->dil_h == 1; /* rows kept across output rows, row iy in slot iy % kh */
    const int32_t out_zp = p->out_zp, lo = p->act_min, hi = p->act_max, ow = p->ow;
    int32_t *wsum = scratch, *accs = scratch + cout_g;
    int8_t *cols = (int8_t *)(accs + 2 * cout_g);
    int8_t *band = cols + 2 * kcol;
    const int8_t *rows[SC_DSP_MAX_KH];
    int32_t held[SC_DSP_MAX_KH], g, oy, ox, oc, ky, kx, c;
    if (p->kh > SC_DSP_MAX_KH) {
        return 0;
    }
    for (g = 0; g < p->groups; ++g) {
        const int8_t *wg = w + g * cout_g * k;
        for (oc = 0; oc < cout_g; ++oc) {
            wsum[oc] = p->in_zp * sc_sum8(wg + oc * k, k);
        }
        for (ky = 0; ky < p->kh; ++ky) {
            held[ky] = SC_INT32_MIN;
        }
        for (oy = 0; oy < p->oh; ++oy) {
            for (ky = 0; ky < p->kh; ++ky) {
                const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dil_h;
                const int32_t slot = ring ? ((iy % p->kh) + p->kh) % p->kh : ky;
                int8_t *row = band + slot * row_bytes;
                if (held[slot] != iy) {
                    sc_fill_row(x, row, iy, g * cin_g, cin_g, wp, p);
                    held[slot] = ring ? iy : SC_INT32_MIN;
                }
                rows[ky] = row;
            }
            for (ox = 0; ox < p->ow; ox += 2) {
                const int32_t two_ox = ox + 1 < p->ow;
                for (c = 0; c < 1 + two_ox; ++c) { /* im2col of columns ox, ox + 1 */
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
                for (oc = 0; oc < cout_g; oc += 2) { /* 2 columns x 2 channels at a time */
                    const int32_t two_oc = oc + 1 < cout_g;
                    int32_t acc[4] = {0, 0, 0, 0};
                    sc_dot_2x2(cols, two_ox ? kcol : 0, wg + oc * k, two_oc ? k : 0, k, acc);
                    accs[oc] = acc[0];
                    accs[cout_g + oc] = acc[2];
                    if (two_oc) {
                        accs[oc + 1] = acc[1];
                        accs[cout_g + oc + 1] = acc[3];
                    }
                }
                for (c = 0; c < 1 + two_ox; ++c) {
                    const int32_t o0 = g * cout_g;
                    sc_requant_column(accs + c * cout_g, wsum, bias + o0, mult + o0, shift + o0,
                                      y + o0 * plane + oy * ow + ox + c, plane, cout_g, out_zp,
                                      lo, hi);
                }
            }
        }
    }
    return 1;
}

#if SC_DSP

#define SC_DSP_DW_ROWS 16

/* One input channel per group (depthwise, with any channel multiplier). Scratch: the
 * group's input plane padded with in_zp, hp x wp bytes, and 4 bytes of slack for the
 * word loads at its end. */
static void sc_conv_dsp_depthwise(const int8_t *x, int8_t *y, const int8_t *w,
                                  const int32_t *bias, const int32_t *mult,
                                  const int8_t *shift, int8_t *pad, const sc_conv_params *p) {
    const int32_t cout_g = p->cout / p->groups;
    const int32_t wp = (p->ow - 1) * p->stride_w + (p->kw - 1) * p->dil_w + 1;
    const int32_t hp = (p->oh - 1) * p->stride_h + (p->kh - 1) * p->dil_h + 1;
    const int32_t taps = p->kh * p->kw;
    const int three = p->kw == 3 && p->dil_w == 1 && p->kh <= SC_DSP_DW_ROWS;
    int32_t g, oc, oy, ox, ky, kx, r;
    for (g = 0; g < p->groups; ++g) {
        const int8_t *xc = x + g * p->h * p->w;
        for (r = 0; r < hp; ++r) { /* the padded plane */
            const int32_t iy = r - p->pad_top;
            int8_t *dst = pad + r * wp;
            if (iy < 0 || iy >= p->h) {
                memset(dst, p->in_zp, (size_t)wp);
            } else {
                const int32_t left = p->pad_left < wp ? p->pad_left : wp;
                const int32_t n = p->w < wp - left ? p->w : wp - left;
                memset(dst, p->in_zp, (size_t)left);
                memcpy(dst + left, xc + iy * p->w, (size_t)n);
                memset(dst + left + n, p->in_zp, (size_t)(wp - left - n));
            }
        }
        for (oc = g * cout_g; oc < (g + 1) * cout_g; ++oc) {
            const int8_t *wc = w + oc * taps;
            const int32_t zsum = p->in_zp * sc_sum8(wc, taps);
            int32_t w02[SC_DSP_DW_ROWS]; /* per kernel row of a 3-wide kernel: (w0, w2) */
            if (three) {
                for (ky = 0; ky < p->kh; ++ky) {
                    w02[ky] = (int32_t)(((uint32_t)(uint16_t)wc[ky * 3]) |
                                        ((uint32_t)(uint16_t)wc[ky * 3 + 2] << 16));
                }
            }
            const int32_t left = shift[oc] > 0 ? shift[oc] : 0;
            const int32_t right = shift[oc] > 0 ? 0 : -shift[oc];
            int8_t *yc = y + oc * p->oh * p->ow;
            if (three && p->kh == 3 && p->dil_h == 1) { /* 3x3: three rows unrolled */
                const int32_t a = w02[0], b = w02[1], c = w02[2];
                const int32_t a1 = wc[1], b1 = wc[4], c1 = wc[7];
                const int32_t bias_c = bias[oc], mult_c = mult[oc];
                for (oy = 0; oy < p->oh; ++oy) {
                    const int8_t *r0 = pad + oy * p->stride_h * wp;
                    int8_t *yr = yc + oy * p->ow;
                    for (ox = 0; ox < p->ow; ++ox, r0 += p->stride_w) {
                        const int32_t v0 = sc_load32(r0), v1 = sc_load32(r0 + wp);
                        const int32_t v2 = sc_load32(r0 + 2 * wp);
                        int32_t acc = __smlad(__sxtb16(v0), a, -zsum);
                        acc = __smlabb(sc_sxtb16_ror8(v0), a1, acc);
                        acc = __smlad(__sxtb16(v1), b, acc);
                        acc = __smlabb(sc_sxtb16_ror8(v1), b1, acc);
                        acc = __smlad(__sxtb16(v2), c, acc);
                        acc = __smlabb(sc_sxtb16_ror8(v2), c1, acc);
                        yr[ox] = sc_out_dsp(acc, bias_c, mult_c, left, right, p);
                    }
                }
                continue;
            }
            for (oy = 0; oy < p->oh; ++oy) {
                const int8_t *base = pad + oy * p->stride_h * wp;
                for (ox = 0; ox < p->ow; ++ox) {
                    const int8_t *xp = base + ox * p->stride_w;
                    int32_t acc = 0;
                    for (ky = 0; ky < p->kh; ++ky, xp += p->dil_h * wp) {
                        const int8_t *wk = wc + ky * p->kw;
                        if (three) { /* x0 w0 + x2 w2 in one SMLAD, x1 w1 in SMLABB */
                            const int32_t xv = sc_load32(xp);
                            acc = __smlad(__sxtb16(xv), w02[ky], acc);
                            acc = __smlabb(sc_sxtb16_ror8(xv), wk[1], acc);
                        } else {
                            for (kx = 0; kx < p->kw; ++kx) {
                                acc += xp[kx * p->dil_w] * wk[kx];
                            }
                        }
                    }
                    yc[oy * p->ow + ox] = sc_out_dsp(acc - zsum, bias[oc], mult[oc], left, right, p);
                }
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
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const int32_t sa = sc_rq_dsp(((int32_t)a[i] - p->a_zp) * (1 << 20), p->a_mult, al, ar);
        const int32_t sb = sc_rq_dsp(((int32_t)b[i] - p->b_zp) * (1 << 20), p->b_mult, bl, br);
        y[i] = sc_clamp8(sc_rq_dsp(__qadd(sa, sb), p->out_mult, yl, yr) + p->out_zp,
                         p->act_min, p->act_max);
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
