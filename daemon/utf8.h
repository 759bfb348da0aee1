/* UTF-8 checks for the server: protobuf-c does not validate `string` fields, so the
 * server checks every text field a client sends, and makes sure every text piece it
 * sends is valid UTF-8 (cutting at character boundaries is tok_utf8_complete's job).
 * Pure functions; any thread. */
#ifndef SPECD_DAEMON_UTF8_H
#define SPECD_DAEMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the valid UTF-8 sequence starting at s[0] (1..4), 0 when s[0..n) starts
 * with an invalid or overlong sequence, a surrogate, a code point above U+10FFFF, or a
 * sequence cut short by n (then *cut is set, when cut is not NULL). */
size_t utf8_char_len(const unsigned char *s, size_t n, bool *cut);

/* True when s[0..n) is entirely valid UTF-8. */
bool utf8_valid(const char *s, size_t n);

#endif
