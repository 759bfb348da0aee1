/* UTF-8 validation per RFC 3629; see utf8.h. */
#include "utf8.h"

size_t utf8_char_len(const unsigned char *s, size_t n, bool *cut)
{
	if (cut)
		*cut = false;
	if (n == 0)
		return 0;
	unsigned c = s[0];
	size_t len;
	unsigned min, cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2, min = 0x80, cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3, min = 0x800, cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4, min = 0x10000, cp = c & 0x07;
	} else {
		return 0; /* continuation byte, 0xc0/0xc1, or 0xf5.. */
	}
	for (size_t i = 1; i < len; i++) {
		if (i >= n) {
			if (cut)
				*cut = true;
			return 0;
		}
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

bool utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_char_len(u + i, n - i, NULL);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}
