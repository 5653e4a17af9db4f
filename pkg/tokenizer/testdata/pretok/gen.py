#!/usr/bin/env python3
"""Regenerates splits.json: every pre-tokenizer rule set of pretok.go
applied, the llama.cpp way (each pattern splits every piece into matches
and the text between), by Python's `regex` module (tested with 2026.5.9),
a backtracking engine independent of regexp2, to the llama.cpp test inputs
plus a few extra strings.

    KVCACHE_DUMP_RULES=1 go test -run TestDumpPreRules ./pkg/tokenizer   # writes /tmp/rules.json
    python3 gen.py /tmp/rules.json > splits.json
"""
import json, sys
import regex

rules = json.load(open(sys.argv[1]))
inp = open('../llama-vocab/ggml-vocab-llama-bpe.gguf.inp', encoding='utf-8').read().split('\n__ggml_vocab_test__\n')
if inp[-1] == '':
    inp = inp[:-1]
extra = ["I'LL go 12345 x's", "a \n\n b\r\n\tc", "Déjà vu — ½ ⅓ 3.14159 ١٢٣", "HTTPServer getURLValue",
         "你好，世界！こんにちは 안녕", "<sentinel:12> IMGIMGABZ    x  y", "~~~ $$$ a+b<=c^d|e`f", "tab\there  \n  end   "]
texts = inp + extra
out = {}
for name, pats in rules.items():
    res = []
    for t in texts:
        pieces = [t]
        for p in pats:
            r = regex.compile(p)
            nxt = []
            for pc in pieces:
                at = 0
                for m in r.finditer(pc):
                    if m.start() > at:
                        nxt.append(pc[at:m.start()])
                    if m.end() > m.start():
                        nxt.append(pc[m.start():m.end()])
                    at = m.end()
                if at < len(pc):
                    nxt.append(pc[at:])
            pieces = nxt
        res.append(pieces)
    out[name] = res
json.dump({"texts": texts, "splits": out}, sys.stdout, ensure_ascii=False, indent=0)
