/* The fixture reader of test_fixture.h, shared by the tests that compare against
 * independent implementations (tokenizer, real models, K-quant layouts). */
#include "test_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_support.h"

bool ts_fx_load(const char *name, yaml_document_t *doc)
{
	char path[1024];
	yaml_parser_t parser;
	snprintf(path, sizeof(path), "%s/tests/fixtures/%s.json", ts_source_dir(), name);
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		fprintf(stderr, "%s: missing\n", path);
		return false;
	}
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, fp);
	bool ok = yaml_parser_load(&parser, doc);
	if (!ok)
		fprintf(stderr, "%s: %s\n", path, parser.problem ? parser.problem : "unreadable");
	else if (!yaml_document_get_root_node(doc)) {
		fprintf(stderr, "%s: empty\n", path);
		yaml_document_delete(doc);
		ok = false;
	}
	yaml_parser_delete(&parser);
	fclose(fp);
	return ok;
}

yaml_node_t *ts_fx_get(yaml_document_t *d, yaml_node_t *map, const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(d, p->key);
		if (k && k->type == YAML_SCALAR_NODE && strcmp((char *)k->data.scalar.value, key) == 0)
			return yaml_document_get_node(d, p->value);
	}
	return NULL;
}

size_t ts_fx_len(yaml_node_t *seq)
{
	assert_non_null(seq);
	assert_int_equal(seq->type, YAML_SEQUENCE_NODE);
	return (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

yaml_node_t *ts_fx_at(yaml_document_t *d, yaml_node_t *seq, size_t i)
{
	assert_true(i < ts_fx_len(seq));
	return yaml_document_get_node(d, seq->data.sequence.items.start[i]);
}

const char *ts_fx_str(yaml_node_t *n)
{
	assert_non_null(n);
	assert_int_equal(n->type, YAML_SCALAR_NODE);
	return (const char *)n->data.scalar.value;
}

double ts_fx_num(yaml_node_t *n)
{
	return strtod(ts_fx_str(n), NULL);
}

size_t ts_fx_ids(yaml_document_t *d, yaml_node_t *seq, int32_t *ids, size_t cap)
{
	size_t n = ts_fx_len(seq);
	assert_true(n <= cap);
	for (size_t i = 0; i < n; i++)
		ids[i] = (int32_t)strtol(ts_fx_str(ts_fx_at(d, seq, i)), NULL, 10);
	return n;
}
