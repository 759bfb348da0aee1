/* Reading the JSON fixtures of tests/fixtures/ (made by tools/reference/) through
 * libyaml: JSON is YAML, and libyaml keeps every number's text, so ids and float bit
 * patterns are read exactly. The accessors fail the running cmocka test on a shape
 * the fixture should not have. Tests only. */
#ifndef SPECD_TESTS_TEST_FIXTURE_H
#define SPECD_TESTS_TEST_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

/* Loads tests/fixtures/NAME.json into *doc (free it with yaml_document_delete); false,
 * with a message on stderr, when the file is missing or not a document. */
bool ts_fx_load(const char *name, yaml_document_t *doc);

/* The value of `key` in the mapping `map`, or NULL (also when map is not a mapping). */
yaml_node_t *ts_fx_get(yaml_document_t *d, yaml_node_t *map, const char *key);
/* Items of a sequence, and item i (< the length). */
size_t ts_fx_len(yaml_node_t *seq);
yaml_node_t *ts_fx_at(yaml_document_t *d, yaml_node_t *seq, size_t i);
/* A scalar's text, and its value as a number. */
const char *ts_fx_str(yaml_node_t *n);
double ts_fx_num(yaml_node_t *n);
/* A sequence of integers into ids[0..cap); returns how many. */
size_t ts_fx_ids(yaml_document_t *d, yaml_node_t *seq, int32_t *ids, size_t cap);

#endif
