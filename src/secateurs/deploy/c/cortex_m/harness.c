/* secateurs Cortex-M harness: int8 inputs read from the host file inputs.bin, outputs
 * written to outputs.bin, through semihosting. sc_mark is called around each inference
 * (and, in a build with SC_OP_MARK, after each kernel call): the instruction counter that
 * the emulator runs records its value at every call. */
#include <stdint.h>

#include "model.h"

int sc_semihost(int op, void *arg);

__attribute__((noinline)) void sc_mark(void) { __asm__ volatile("" ::: "memory"); }

static int sc_open(const char *name, uint32_t mode) {
    uint32_t len = 0, args[3];
    while (name[len]) {
        ++len;
    }
    args[0] = (uint32_t)(uintptr_t)name;
    args[1] = mode;
    args[2] = len;
    return sc_semihost(0x01, args); /* SYS_OPEN */
}

static int sc_transfer(int op, int handle, void *data, uint32_t size) {
    uint32_t args[3];
    args[0] = (uint32_t)handle;
    args[1] = (uint32_t)(uintptr_t)data;
    args[2] = size;
    return sc_semihost(op, args); /* SYS_READ (6) or SYS_WRITE (5): bytes not moved */
}

int main(void) {
    static int8_t input[SECATEURS_INPUT_SIZE];
    static int8_t output[SECATEURS_OUTPUT_SIZE];
    const int in = sc_open("inputs.bin", 1), out = sc_open("outputs.bin", 5); /* rb, wb */
    uint32_t handle;
    if (in < 0 || out < 0) {
        return 1;
    }
    sc_mark(); /* an empty pair: what two marks cost by themselves */
    sc_mark();
    while (sc_transfer(6, in, input, SECATEURS_INPUT_SIZE) == 0) {
        sc_mark();
        if (secateurs_invoke(input, output) != 0) {
            return 2;
        }
        sc_mark();
        if (sc_transfer(5, out, output, SECATEURS_OUTPUT_SIZE) != 0) {
            return 3;
        }
    }
    handle = (uint32_t)in;
    sc_semihost(0x02, &handle); /* SYS_CLOSE */
    handle = (uint32_t)out;
    sc_semihost(0x02, &handle);
    return 0;
}
