/* libFuzzer target: the text of a cluster file (as in configs/), through the YAML
 * reader and the checks of every key (daemon/config_parse.c, config_validate.c) that
 * `specd --cluster` and `specd --check-config` run. Seeds: the files of configs/
 * (scripts/test.sh copies them). Build: cmake -DCMAKE_C_COMPILER=clang -DSPECD_FUZZ=ON;
 * run: fuzz_config CORPUS. */
#include <stddef.h>
#include <stdint.h>

#include "daemon/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg_cluster *cfg = NULL;
	struct specd_error err;
	if (cfg_parse_buffer((const char *)data, size, "fuzz.yaml", 0, &cfg, &err) == SPECD_OK)
		cfg_destroy(cfg);
	return 0;
}
