"""Microcontroller targets: memory, clock, power and kernels, and the check that a model
fits one (deployment-driven design, Lai & Suda 2018, arXiv 1806.07846).

Latency and energy are *estimates*: instructions per inference (counted on the host, or
approximated from MACs) times the target's cycles per instruction over its clock, times
its active power. They rank models; a board measurement is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._registry import Registry

ALL_KERNELS = frozenset(
    {"conv", "linear", "add", "mul", "mean", "avg_pool", "max_pool", "clamp", "lut", "move"}
)


@dataclass(frozen=True)
class Target:
    """A device: SRAM and flash in bytes, clock in Hz, active power in mW, the op kinds its
    kernels cover, and cycles per instruction for the latency estimate."""

    name: str
    sram_bytes: int
    flash_bytes: int
    clock_hz: int
    active_power_mw: float
    kernels: frozenset[str] = field(default=ALL_KERNELS)
    cycles_per_instruction: float = 1.0

    def latency_ms(self, instructions: int) -> float:
        """Estimated milliseconds for ``instructions`` at this clock."""
        return 1e3 * instructions * self.cycles_per_instruction / self.clock_hz

    def energy_mj(self, instructions: int) -> float:
        """Estimated millijoules per inference: active power times estimated latency."""
        return self.active_power_mw * self.latency_ms(instructions) / 1e3


TARGETS: Registry[Target] = Registry("target")


def register_target(target: Target) -> Target:
    TARGETS.register(target.name)(target)
    return target


register_target(Target("cortex-m4", 256 * 1024, 1024 * 1024, 120_000_000, 40.0))
register_target(Target("cortex-m7", 512 * 1024, 2048 * 1024, 216_000_000, 100.0))
register_target(Target("cortex-m0plus", 32 * 1024, 256 * 1024, 48_000_000, 5.0,
                       cycles_per_instruction=1.3))  # fmt: skip
register_target(Target("generic", 2**31 - 1, 2**31 - 1, 100_000_000, 0.0))


def get_target(target: str | Target) -> Target:
    if isinstance(target, Target):
        return target
    return TARGETS.get(target)


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


def check(model, target: str | Target = "cortex-m4", example=None, sparse: str = "auto") -> Fit:
    """Whether ``model`` fits ``target``: flash, peak SRAM and kernels.

    A QuantizedModel is measured as the generated C would be (constants in flash, the
    arena of the static memory plan); a float model needs ``example`` inputs and is
    measured by ``profile`` at int8 weights and activations.
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
        program, memory = build_program(model, sparse)
        flash = sum(c.nbytes for op in program.ops for c in op.consts.values())
        sram = memory.arena_bytes + scratch_bytes(program)  # arena, unpacked weights, row
    else:
        from .profile import profile

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
        problems.append(f"activation arena {sram} B (with the kernels' scratch) exceeds the "
                        f"{t.sram_bytes} B of SRAM")  # fmt: skip
    return Fit(t.name, flash, sram, problems)
