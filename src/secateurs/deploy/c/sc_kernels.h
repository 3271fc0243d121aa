/* secateurs int8 kernels: TensorFlow Lite Micro int8 arithmetic, channel-first (CHW)
 * tensors, batch 1. Portable C99: no malloc, no floating point, stdint.h and string.h only.
 * Generated models call these with constant parameter structs kept in flash. */
#ifndef SC_KERNELS_H
#define SC_KERNELS_H

#include <stdint.h>
#include <string.h>

#include "sc_config.h" /* SC_LITERT_ROUNDING: 0 for TFLite Micro's double rounding */

/* The Arm DSP extension (Cortex-M4, M7, M33, M55): convolutions and fully connected layers
 * take two multiply-accumulates per instruction (SXTB16, SMLAD). Other targets run the
 * portable loops; both compute the same bytes. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(SC_NO_DSP)
#define SC_DSP 1
#else
#define SC_DSP 0
#endif
/* ARMv6-M (Cortex-M0+): dense convolutions take the DSP path's blocking (channel-last rows,
 * im2col of two columns, two output channels at once) with one multiply per MAC */
#if defined(__ARM_ARCH_6M__) && !defined(SC_NO_DSP)
#define SC_BLOCKED 1
#else
#define SC_BLOCKED 0
#endif

typedef struct {
    int32_t cin, h, w, cout, kh, kw, oh, ow;
    int32_t stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, groups;
    int32_t in_zp, out_zp, act_min, act_max;
    int32_t live; /* filterlet weights per kernel position: cin/groups, or chan's length */
} sc_conv_params;

typedef struct {
    int32_t in_features, out_features, in_zp, out_zp, act_min, act_max;
} sc_linear_params;

/* Convolutions work one output row at a time in acc, ow int32 accumulators of scratch.
 * Dense weights, int8 [cout][kh][kw][cin/groups]: a kernel position's weights are
 * contiguous, as in a filterlet. */
void sc_conv(const int8_t *x, int8_t *y, const int8_t *w, const int32_t *bias,
             const int32_t *mult, const int8_t *shift, int32_t *acc, const sc_conv_params *p);

/* Dense weights of 4 or 2 bits, packed in that order (low bits first, two's complement);
 * each output channel's weights are unpacked into scratch (cin/groups * kh * kw bytes)
 * before it is computed. */
void sc_conv_packed(const int8_t *x, int8_t *y, const uint8_t *w, int32_t bits,
                    int8_t *scratch, const int32_t *bias, const int32_t *mult,
                    const int8_t *shift, int32_t *acc, const sc_conv_params *p);

/* Filterlet-CSR weights (DTMM): output channel oc has count[oc] kept filterlets (two
 * counts to a byte, low nibble first, when kh * kw <= 15), stored after those of the
 * channels before it, each a kernel position col[r] (ky * kw + kx; none stored for a 1x1
 * kernel) and p->live int8 weights at vals[r * p->live]: one per input channel of the
 * group, or, where chan is not null, one per input channel that chan lists (a channel no
 * filter of the layer reads is not stored). Skipped filterlets cost nothing.
 * bias, mult and shift list only the channels with filterlets; a channel without any is
 * filled with its constant output, the next of fill. */
void sc_conv_filterlet(const int8_t *x, int8_t *y, const int8_t *vals, const uint8_t *col,
                       const uint8_t *count, const uint8_t *chan, const int32_t *bias,
                       const int32_t *mult, const int8_t *shift, const int8_t *fill,
                       int32_t *acc, const sc_conv_params *p);

void sc_linear(const int8_t *x, int8_t *y, const int8_t *w, const int32_t *bias,
               const int32_t *mult, const int8_t *shift, const sc_linear_params *p);

/* Weights of 4 or 2 bits, packed as for sc_conv_packed; scratch holds in_features bytes. */
void sc_linear_packed(const int8_t *x, int8_t *y, const uint8_t *w, int32_t bits,
                      int8_t *scratch, const int32_t *bias, const int32_t *mult,
                      const int8_t *shift, const sc_linear_params *p);

/* Unstructured sparse weights: a bitmask per output row, (in + 7) / 8 bytes, input i at
 * bit i % 8 of byte i / 8, then the kept int8 weights, row by row. The kernel visits only
 * set bits: a byte of pruned weights costs one test. */
void sc_linear_bitmask(const int8_t *x, int8_t *y, const uint8_t *mask, const int8_t *vals,
                       const int32_t *bias, const int32_t *mult, const int8_t *shift,
                       const sc_linear_params *p);

/* Element i of an operand is at ((i / div) % mod): div 1, mod n for a full tensor; div
 * inner size, mod channels for a per-channel operand broadcast over space. */
typedef struct {
    int32_t count, a_div, a_mod, b_div, b_mod;
    int32_t a_zp, b_zp, out_zp, act_min, act_max;
    int32_t a_mult, a_shift, b_mult, b_shift, out_mult, out_shift;
} sc_binary_params;

void sc_add(const int8_t *a, const int8_t *b, int8_t *y, const sc_binary_params *p);
void sc_mul(const int8_t *a, const int8_t *b, int8_t *y, const sc_binary_params *p);

typedef struct {
    int32_t outer, reduce, inner, in_zp, out_zp, mult, shift;
} sc_mean_params;

void sc_mean(const int8_t *x, int8_t *y, const sc_mean_params *p);

typedef struct {
    int32_t c, h, w, oh, ow, kh, kw, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
    int32_t count_include_pad, zp;
} sc_pool_params;

void sc_avg_pool(const int8_t *x, int8_t *y, const sc_pool_params *p);
void sc_max_pool(const int8_t *x, int8_t *y, const sc_pool_params *p);

void sc_clamp(const int8_t *x, int8_t *y, int32_t count, int32_t lo, int32_t hi);
void sc_lut(const int8_t *x, int8_t *y, int32_t count, const int8_t *table);

/* Data movement as runs: copy len bytes from source src (or fill with fill when src < 0)
 * at src_off to dst_off of the output. Two bytes a field where every offset of the model
 * fits (SC_SHORT_RUNS, set by the export), else four. */
#if SC_SHORT_RUNS
typedef int16_t sc_run_field;
#else
typedef int32_t sc_run_field;
#endif
typedef struct {
    sc_run_field dst_off, src, src_off, len;
} sc_copy_run;

void sc_copy(const int8_t *const *srcs, int8_t *y, const sc_copy_run *runs, int32_t n_runs,
             int8_t fill);

#endif
