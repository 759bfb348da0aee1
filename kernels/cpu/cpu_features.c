/* Run-time ISA detection for the CPU backend; see cpu_features.h. */
#include "cpu_features.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static enum kern_isa g_hw, g_isa;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void detect(void)
{
	g_hw = KERN_ISA_SCALAR;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	__builtin_cpu_init();
	/* F16C by CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports has no name
	 * for it. */
	unsigned a = 0, b = 0, c = 0, d = 0;
	bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
		g_hw = KERN_ISA_AVX2;
		if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("avx512vl"))
			g_hw = KERN_ISA_AVX512;
	}
#endif
	g_isa = g_hw;
	const char *cap = getenv("SPECD_ISA");
	if (cap) {
		enum kern_isa want = g_hw;
		if (strcmp(cap, "scalar") == 0)
			want = KERN_ISA_SCALAR;
		else if (strcmp(cap, "avx2") == 0)
			want = KERN_ISA_AVX2;
		else if (strcmp(cap, "avx512") == 0)
			want = KERN_ISA_AVX512;
		if (want < g_isa)
			g_isa = want;
	}
}

enum kern_isa kern_cpu_isa(void)
{
	pthread_once(&g_once, detect);
	return g_isa;
}

enum kern_isa kern_cpu_isa_hw(void)
{
	pthread_once(&g_once, detect);
	return g_hw;
}

const char *kern_isa_name(enum kern_isa isa)
{
	switch (isa) {
	case KERN_ISA_SCALAR: return "scalar";
	case KERN_ISA_AVX2: return "avx2";
	case KERN_ISA_AVX512: return "avx512";
	}
	return "?";
}
