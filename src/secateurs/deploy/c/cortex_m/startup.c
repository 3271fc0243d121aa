/* secateurs bare-metal start-up for the Cortex-M boards QEMU emulates: a vector table, a
 * reset handler that copies .data and zeroes .bss, and semihosting (BKPT 0xAB) for the
 * host files and the exit status. Any fault ends the run with a non-zero status. */
#include <stdint.h>

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
int main(void);
int sc_semihost(int op, void *arg);
void sc_reset(void);
void sc_fault(void);

__attribute__((section(".vectors"), used)) static const void *const sc_vectors[16] = {
    &__stack_top,     (void *)sc_reset, (void *)sc_fault, (void *)sc_fault,
    (void *)sc_fault, (void *)sc_fault, (void *)sc_fault, 0,
    0,                0,                0,                (void *)sc_fault,
    (void *)sc_fault, 0,                (void *)sc_fault, (void *)sc_fault};

int sc_semihost(int op, void *arg) {
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void sc_exit(int code) { /* SYS_EXIT: application exit, or a run-time error */
    sc_semihost(0x18, (void *)(uintptr_t)(code == 0 ? 0x20026 : 0x20023));
    for (;;) {
    }
}

void sc_fault(void) { sc_exit(3); }

void sc_reset(void) {
    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end) {
        *dst++ = *src++;
    }
    for (dst = &__bss_start; dst < &__bss_end;) {
        *dst++ = 0;
    }
    sc_exit(main());
}
