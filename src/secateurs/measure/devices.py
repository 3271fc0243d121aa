"""Microcontroller targets: memory, clock, power and the op kinds their kernels cover.

The descriptions alone, which the exporters read (``deploy`` names its target); the check
that a model fits one is :func:`secateurs.measure.target.check`, which measures the C.
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
    """Add ``target`` to ``TARGETS`` under its name, so that budgets and checks can name it;
    returns it."""
    TARGETS.register(target.name)(target)
    return target


register_target(Target("cortex-m4", 256 * 1024, 1024 * 1024, 120_000_000, 40.0))
register_target(Target("cortex-m7", 512 * 1024, 2048 * 1024, 216_000_000, 100.0))
register_target(
    Target("cortex-m0plus", 32 * 1024, 256 * 1024, 48_000_000, 5.0, cycles_per_instruction=1.3)
)
register_target(Target("generic", 2**31 - 1, 2**31 - 1, 100_000_000, 0.0))


def get_target(target: str | Target) -> Target:
    """``target`` itself, or the registered Target of that name (an unknown name lists the
    known ones)."""
    if isinstance(target, Target):
        return target
    return TARGETS.get(target)
