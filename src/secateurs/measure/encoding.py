"""Bytes of a weight tensor under the encodings a microcontroller kernel can read.

- dense: every weight at ``bits``;
- bitmask: one bit per weight, each output channel's bits padded to a byte, then the
  nonzero weights;
- CSR: rows are output channels; nonzero values, a column index each (1 byte up to 256
  columns, else 2, else 4) and row pointers (2 bytes while the count fits, else 4);
- filterlet CSR (convolutions; DTMM, Han, Xiao & Li 2024, arXiv 2401.09068): the kept
  filterlets (all input-channel weights at one kernel position of one filter) stored whole,
  a one-byte column index each where kh·kw ≤ 255 (DTMM spends an int16) and a one-byte
  count of filterlets per filter (in place of row pointers; the C kernel keeps a running
  offset); beyond 255 positions, two-byte indices and row pointers. Where at most 3 in 4
  input channels have a weight in some filter and dropping the others saves bytes, each
  filterlet stores only those, and the layer lists them (a byte each, up to 256).
"""

from __future__ import annotations

import math

import torch

ENCODINGS = ("dense", "bitmask", "csr", "filterlet_csr")


def _index_bytes(count: int) -> int:
    return 1 if count <= 256 else 2 if count <= 65536 else 4


def kept_filterlets(weight: torch.Tensor) -> int:
    """Filterlets (one filter's input-channel weights at one kernel position) with a
    nonzero weight."""
    return int((weight.flatten(2) != 0).any(1).sum())


def live_channels(weight: torch.Tensor) -> torch.Tensor | None:
    """The input channels (of a group) that some filter of a convolution reads, where
    storing each filterlet's weights for those alone, plus their one-byte list, is smaller
    than storing them all, and at most 3 in 4 channels are read (the kernel then reads the
    list once per row and channel; with more, that costs more instructions than the
    multiplies it saves: ResNet-8 with 92 to 97% read took 5% more); else None."""
    cin = weight.shape[1]
    if cin == 1 or cin > 256:
        return None
    live = (weight != 0).transpose(0, 1).flatten(1).any(1).nonzero().flatten()
    kept = kept_filterlets(weight)
    pays = 4 * len(live) <= 3 * cin and kept * (cin - len(live)) > len(live)
    return live if pays else None


def encoding_bytes(weight: torch.Tensor, bits: int, is_conv: bool) -> dict[str, int]:
    """Bytes of ``weight`` (out channels first) at ``bits`` bits per value under each encoding
    that applies to it (``is_conv``: a convolution's, which filterlet encodings can store)."""
    w = weight.detach()
    numel, nnz = w.numel(), int(torch.count_nonzero(w))
    rows = w.shape[0]
    cols = numel // rows
    value_bytes = lambda n: math.ceil(n * bits / 8)  # noqa: E731
    pointer = 2 if nnz < 65536 else 4
    sizes = {
        "dense": value_bytes(numel),
        "bitmask": rows * math.ceil(cols / 8) + value_bytes(nnz),
        "csr": value_bytes(nnz) + nnz * _index_bytes(cols) + (rows + 1) * pointer,
    }
    if is_conv and w.dim() >= 3:
        cin = w.shape[1]
        positions = math.prod(w.shape[2:])
        kept = kept_filterlets(w)
        # a column index per filterlet (none for a 1x1 kernel) and a count per filter (a
        # nibble up to 15 positions), or wide indices and pointers, as export_c stores them
        if positions <= 255:
            counts = math.ceil(rows / 2) if positions <= 15 else rows
            index_bytes = (kept if positions > 1 else 0) + counts
        else:
            index_bytes = 2 * kept + (rows + 1) * pointer
        live = live_channels(w)
        stored = cin if live is None else len(live)
        index_bytes += 0 if live is None else len(live)
        # int8 values padded to a whole word where export_c stores them (up to 255
        # positions): the DSP kernels read a filterlet's weights in words
        pad = (-stored) % 4 if kept and bits == 8 and positions <= 255 else 0
        sizes["filterlet_csr"] = value_bytes(kept * stored) + pad + index_bytes
    return sizes


def smallest_encoding(weight: torch.Tensor, bits: int, is_conv: bool) -> tuple[str, int]:
    """The encoding that stores ``weight`` at ``bits`` bits per value in the fewest bytes,
    and those bytes (``is_conv``: a convolution's weight, whose filterlets may be sparse)."""
    sizes = encoding_bytes(weight, bits, is_conv)
    name = min(sizes, key=lambda k: (sizes[k], ENCODINGS.index(k)))
    return name, sizes[name]
