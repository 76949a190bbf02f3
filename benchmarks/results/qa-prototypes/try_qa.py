"""Two qa-pairs prototypes measured for issue #30 (RESULTS.md, session 4) — not shipped.

MODE enum: the whole-chunk schema's answer is an enum of the chunk's prose sentences (the model
picks one, never writes one) and the question must ask about the picked sentence.
MODE subject: the whole-chunk path off; one question per fact-bearing sentence that starts with
its own subject, the prompt naming that subject, the question required to name it.
Each on N seeded random chunks per document, llama.cpp on one thread.
usage: .venv/bin/python benchmarks/results/qa-prototypes/try_qa.py MODE N DOC...
"""
import json, os, random, re, shutil, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from studio.models import registry as models
models.llama_threads = lambda: 1
from studio.api import Studio
from studio.data import questions as Q, recipes
from studio.data.prepare import read_split

MODE, limit, docs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
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
    return {k: p[k] for k in ("question", "answer")}

def chunk_pairs(gen, chunk, n):
    sents = sentences(Q.cut(chunk, 160))
    if not sents:
        return []
    props = {"question": {"type": "string", "pattern": Q.QUESTION}, "answer": {"type": "string", "enum": sents}}
    keys = ["question", "answer"]
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

VERB = re.compile(r"^(.{3,80}?)\s+(is|are|was|were|indicates?|returns?|contains?|provides?|allows?|"
                  r"means?|lets?|makes?|uses?|gives?|shows?|defines?|specifies?|describes?|holds?|"
                  r"stores?|lists?|controls?|sets?|takes?|accepts?|creates?|removes?|installs?|"
                  r"will|can|may|must|should|has|have|does|do)\b", re.I)
BAD_START = re.compile(r"^(it|this|that|these|those|they|there|here|such|however|thus|so|then|also|"
                       r"in this|for example|for instance|in addition|note|if|when|otherwise)\b", re.I)
EX = [("The ls command lists the files in a directory.", "The ls command", "What does the ls command do?"),
      ("Water boils at 100 degrees Celsius at sea level.", "Water", "At what temperature does water boil at sea level?")]
PROMPT = "Write the question about {subject} that this sentence answers. Reply in JSON.\n\nSentence: {sentence}"

def subject(s):
    if BAD_START.match(s):
        return None
    m = VERB.match(s)
    if not m:
        return None
    subj = m.group(1).strip(" ,")
    if len(subj.split()) > 10 or not re.search(r"[A-Za-z]{3}", subj) or "," in subj:
        return None
    return subj

def sentence_questions(gen, chunk, n, drop):
    found = 0
    for sentence in Q.fact_sentences(chunk):
        if found >= n:
            return
        subj = subject(sentence)
        if subj is None:
            drop("no subject to ask about", sentence)
            continue
        msgs = []
        for s, sj, q in EX:
            msgs += [{"role": "user", "content": PROMPT.format(subject=sj[0].lower() + sj[1:] if sj.split()[0] in ("The", "A", "An") else sj, sentence=s)},
                     {"role": "assistant", "content": json.dumps({"question": q})}]
        sj = subj[0].lower() + subj[1:] if subj.split()[0] in ("The", "A", "An") else subj
        msgs.append({"role": "user", "content": PROMPT.format(subject=sj, sentence=sentence)})
        q = Q._parse(gen.json(msgs, Q.QUESTION_SCHEMA, Q.QUESTION_TOKENS), "question") or ""
        q = q.strip()
        why = Q.question_problem(q, sentence) if q else "empty question"
        if not why:
            subj_words = [w for w in Q.norm(subj).split() if w not in Q.VAGUE and len(w) > 2]
            if subj_words and not any(w in Q.norm(q).split() for w in subj_words):
                why = "does not ask about the sentence's subject"
        if why:
            drop(why, f"Q: {q}\nSentence: {sentence}")
            continue
        found += 1
        yield q, sentence


CTX = [None]
if MODE == "enum":
    Q.chunk_pairs = chunk_pairs
else:
    Q.sentence_questions = sentence_questions
    Q.chunk_pairs = lambda gen, chunk, n: []
orig_chunks = recipes.Context.chunks


def chunks(self, doc):
    CTX[0] = self
    c = orig_chunks(self, doc)
    return random.Random(3).sample(c, min(limit, len(c)))


recipes.Context.chunks = chunks
home = Path(tempfile.mkdtemp(prefix="proto-"))
src = models.prepare_embedded(ROOT / ".venv" / ".test-cache")
shutil.copytree(src, home / "models" / src.name, copy_function=os.link)
s = Studio(home)
rng = random.Random(7)
for k, doc in enumerate(docs):
    t0 = time.time()
    r = s.data_prepare([doc], f"p{k}", recipe="qa-pairs", val_fraction=0)
    secs = time.time() - t0
    qa = r["qa"]
    print(f"## {Path(doc).name} [{MODE}] {qa['chunks']} chunks {secs:.0f}s {qa['chunks']/secs*60:.1f}/min "
          f"gen {qa['generated']} (chunk {qa['from_chunk']} sent {qa['from_sentences']}) fb {qa['fallback']} share {qa['generated_share']}")
    for why, n in sorted(qa["dropped"].items(), key=lambda kv: -kv[1]):
        print(f"   drop {n:4d} {why}")
    rows = [x for x in read_split(r["path"], "train") if not x["meta"].get("fallback")]
    for x in rng.sample(rows, min(12, len(rows))):
        print(f"- [{x['meta'].get('written')}] Q: {x['messages'][0]['content']}\n  A: {x['messages'][-1]['content']}")
    print(flush=True)
