/* specd-config-doc: prints the cluster-file reference (docs/config.md) generated
 * from the schema table. The committed docs/config.md is this program's output;
 * a unit test fails when they differ. */
#include <stdio.h>

#include "daemon/config.h"

int main(void)
{
	if (cfg_write_reference(stdout) != SPECD_OK) {
		fprintf(stderr, "specd-config-doc: cannot write the reference\n");
		return 1;
	}
	return 0;
}
