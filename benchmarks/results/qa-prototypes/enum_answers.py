"""Prototype: whole-chunk pairs whose answers must be a verbatim sentence of the chunk (enum).
usage: proto.py VARIANT N_CHUNKS DOC... (VARIANT: base | qa | aq)"""
import json, os, random, re, shutil, sys, tempfile, time
sys.path.insert(0, "/work/main")
from pathlib import Path
from studio import models
models.llama_threads = lambda: 1
from studio.api import Studio
from studio.data import questions as Q, recipes
from studio.data.prepare import read_split

variant, limit, docs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
EX_SENTS = ["Water boils at 100 degrees Celsius at sea level.",
            "On a high mountain the air pressure is lower, so water boils at a lower temperature and food takes longer to cook."]
EX_PAIRS = [{"question": "At what temperature does water boil at sea level?", "answer": EX_SENTS[0]},
            {"question": "Why does food take longer to cook on a high mountain?", "answer": EX_SENTS[1]}]
PROMPT = ("Write {n} questions that this passage answers; each answer is one sentence copied from the "
          "passage. Reply in JSON.\n\nPassage:\n{chunk}")

def sentences(chunk):
    import pysbd
    prose = re.sub(r"```.*?```", "\n\n", chunk, flags=re.S)
    lines = [ln for ln in prose.splitlines() if ln.strip() and not re.match(r"^\s*(#|\||[-*•]\s|\d+[.)]\s*$)", ln)]
    text = re.sub(r"\s+", " ", " ".join(lines))
    return [s.strip() for s in pysbd.Segmenter(language="en", clean=False).segment(text)
            if 5 <= len(s.split()) <= 60 and s.strip()[0].isupper() and s.strip()[-1] in ".!"
            and sum(c.isalpha() for c in s) >= 0.6 * len(s)]

def order(p):
    return {k: p[k] for k in (("answer", "question") if variant == "aq" else ("question", "answer"))}

def chunk_pairs(gen, chunk, n):
    sents = sentences(Q.cut(chunk, 160))
    if not sents:
        return []
    props = {"question": {"type": "string", "pattern": Q.QUESTION}, "answer": {"type": "string", "enum": sents}}
    keys = ["answer", "question"] if variant == "aq" else ["question", "answer"]
    item = {"type": "object", "required": keys, "properties": {k: props[k] for k in keys}}
    schema = {"type": "object", "required": ["pairs"], "properties": {"pairs": {"type": "array", "minItems": 1, "maxItems": n, "items": item}}}
    msgs = [{"role": "user", "content": PROMPT.format(n=2, chunk=Q.EXAMPLE_PASSAGE)},
            {"role": "assistant", "content": json.dumps({"pairs": [order(p) for p in EX_PAIRS]})},
            {"role": "user", "content": PROMPT.format(n=n, chunk=" ".join(sents))}]
    pairs = Q._parse(gen.json(msgs, schema, 220), "pairs") or []
    out = []
    for p in pairs:
        q, a = p.get("question", "").strip(), p.get("answer", "").strip()
        why = Q.question_problem(q, a)
        if why:
            CTX[0].drop("chunk: " + why, f"Q: {q}\nA: {a}")
        else:
            out.append((q, a))
    return out

CTX = [None]
if variant != "base":
    Q.chunk_pairs = chunk_pairs
orig_chunks = recipes.Context.chunks
def chunks(self, doc):
    CTX[0] = self
    c = orig_chunks(self, doc)
    return random.Random(3).sample(c, min(limit, len(c)))
recipes.Context.chunks = chunks

home = Path(tempfile.mkdtemp(prefix="proto-"))
src = models.prepare_embedded(Path("/work/main/.venv/.test-cache"))
shutil.copytree(src, home / "models" / src.name, copy_function=os.link)
s = Studio(home)
rng = random.Random(7)
for k, doc in enumerate(docs):
    t0 = time.time()
    r = s.data_prepare([doc], f"p{k}", recipe="qa-pairs", val_fraction=0)
    secs = time.time() - t0
    qa = r["qa"]
    print(f"## {Path(doc).name} [{variant}] {qa['chunks']} chunks {secs:.0f}s {qa['chunks']/secs*60:.1f}/min "
          f"gen {qa['generated']} (chunk {qa['from_chunk']} sent {qa['from_sentences']}) fb {qa['fallback']} share {qa['generated_share']}")
    for why, n in sorted(qa["dropped"].items(), key=lambda kv: -kv[1]):
        print(f"   drop {n:4d} {why}")
    rows = [x for x in read_split(r["path"], "train") if not x["meta"].get("fallback")]
    for x in rng.sample(rows, min(12, len(rows))):
        print(f"- [{x['meta'].get('written')}] Q: {x['messages'][0]['content']}\n  A: {x['messages'][-1]['content']}")
    print(flush=True)
