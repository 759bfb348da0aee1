/* model_file_open: the one entry point that turns a model path into a gguf_file view
 * (model_file.h). */
#include "model_file.h"

#include "model/gguf.h"

enum specd_status model_file_open(const char *path, struct gguf_file **out,
				  struct specd_error *err)
{
	return gguf_open(path, out, err);
}
