/* Which SIMD instruction sets this CPU offers, decided once at run time. SIMD code
 * is compiled per file for its ISA (cmake specd_simd_source) and only called when
 * the level here allows it, so one binary runs on any x86-64 and uses what it finds. */
#ifndef SPECD_KERNELS_CPU_FEATURES_H
#define SPECD_KERNELS_CPU_FEATURES_H

enum kern_isa {
	KERN_ISA_SCALAR = 0, /* portable C, the reference */
	KERN_ISA_AVX2,       /* AVX2 + FMA + F16C */
	KERN_ISA_AVX512,     /* AVX-512 F/BW/VL + the AVX2 set */
};

/* The best ISA this CPU supports, capped by SPECD_ISA=scalar|avx2|avx512 in the
 * environment (for tests and comparisons). Computed once; any thread. */
enum kern_isa kern_cpu_isa(void);
/* What the hardware offers, ignoring SPECD_ISA. */
enum kern_isa kern_cpu_isa_hw(void);
const char *kern_isa_name(enum kern_isa isa);

#endif
