"""Microcontroller targets: memory, clock, power and kernels, and the check that a model
fits one (deployment-driven design, Lai & Suda 2018, arXiv 1806.07846).

Latency and energy are *estimates*: instructions per inference (counted on the host, or
approximated from MACs) times the target's cycles per instruction over its clock, times
its active power. They rank models; a board measurement is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

from .devices import ALL_KERNELS, TARGETS, Target, get_target, register_target

__all__ = ["ALL_KERNELS", "TARGETS", "Fit", "Target", "check", "get_target", "register_target"]


@dataclass
class Fit:
    """What :func:`check` found: the figures, and each problem in words (empty: it fits)."""

    target: str
    flash_bytes: int
    sram_bytes: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_not_ok(self) -> None:
        if self.problems:
            raise ValueError(f"the model does not fit {self.target}: " + "; ".join(self.problems))


def check(model, *, target: str | Target = "cortex-m4", example=None, sparse: str = "auto") -> Fit:
    """Whether ``model`` fits ``target``: flash, peak SRAM and kernels.

    A QuantizedModel is measured as the generated C would be (constants in flash, the
    arena of the static memory plan); a float model needs ``example`` inputs and is
    measured by ``profile`` at int8 weights and activations. ``sparse`` (auto, never,
    always) chooses the C's sparse kernels as ``export_c`` does.
    """
    t = get_target(target)
    problems: list[str] = []
    if hasattr(model, "run_int8") and hasattr(model, "graph"):
        from ..deploy.codegen import build_program, scratch_bytes  # deploy reads them

        missing = sorted({n.kind for n in model.graph.nodes} - t.kernels)
        if missing:
            problems.append(
                f"ops {missing} have no kernel on {t.name} (it has {sorted(t.kernels)})"
            )
            return Fit(t.name, 0, 0, problems)
        program, memory = build_program(model, sparse=sparse)
        flash = sum(c.nbytes for op in program.ops for c in op.consts.values())
        sram = memory.arena_bytes + scratch_bytes(program)  # arena, unpacked weights, row
    else:
        from .profiler import profile

        if example is None:
            raise ValueError(
                "check needs example inputs for a float model (task.example_inputs()), or "
                "a QuantizedModel from sc.quant.quantize"
            )
        prof = profile(model, example, weight_bits=8, activation_bits=8, latency=False)
        flash, sram = prof.flash_bytes, prof.peak_sram_bytes
    if flash > t.flash_bytes:
        problems.append(f"flash {flash} B exceeds the {t.flash_bytes} B of {t.name}")
    if sram > t.sram_bytes:
        problems.append(
            f"activation arena {sram} B (with the kernels' scratch) exceeds the "
            f"{t.sram_bytes} B of SRAM"
        )
    return Fit(t.name, flash, sram, problems)
