/* model_file_open: the one entry point that turns a model path into a gguf_file view
 * (model_file.h): a folder goes to the Hugging Face reader (hf_open.c), anything else
 * to the GGUF reader. */
#include "model_file.h"

#include <sys/stat.h>

#include "hf_int.h"
#include "model/gguf.h"

enum specd_status model_file_open(const char *path, struct gguf_file **out,
				  struct specd_error *err)
{
	struct stat sb;

	if (path && out && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
		return hf_open(path, out, err);
	return gguf_open(path, out, err);
}
