/* secateurs instruction counter: a QEMU TCG plugin (built for the host, loaded by
 * qemu-system-arm -plugin). It adds each translated block's instruction count to a counter
 * when the block runs, and writes the counter, one line per call, each time the
 * instruction at address mark= runs (the harness's sc_mark), to the file out=. The
 * difference of two lines is the exact number of instructions executed between two marks
 * (instructions skipped in an IT block count, as on the core).
 * Declares the few functions of QEMU's plugin API (version 1, QEMU 7 and later) it uses. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;

#define SC_EXPORT __attribute__((visibility("default")))
#define SC_INLINE_ADD_U64 0
#define SC_CB_NO_REGS 0

SC_EXPORT int qemu_plugin_version = 1;

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t,
                                           void (*)(qemu_plugin_id_t, struct qemu_plugin_tb *));
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, int, void *, uint64_t);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *,
                                            void (*)(unsigned int, void *), int, void *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, void *),
                                    void *);

static uint64_t executed, mark;
static FILE *out;

static void on_mark(unsigned int vcpu, void *data) {
    (void)vcpu;
    (void)data;
    fprintf(out, "%llu\n", (unsigned long long)executed);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    const size_t n = qemu_plugin_tb_n_insns(tb);
    size_t i;
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, SC_INLINE_ADD_U64, &executed, n);
    for (i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if ((qemu_plugin_insn_vaddr(insn) | 1u) == (mark | 1u)) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, SC_CB_NO_REGS, NULL);
        }
    }
}

static void on_exit_(qemu_plugin_id_t id, void *data) {
    (void)id;
    (void)data;
    fclose(out);
}

SC_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc,
                                  char **argv) {
    int i;
    (void)info;
    for (i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "mark=", 5) == 0) {
            mark = strtoull(argv[i] + 5, NULL, 0);
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            out = fopen(argv[i] + 4, "w");
        }
    }
    if (out == NULL || mark == 0) {
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit_, NULL);
    return 0;
}
