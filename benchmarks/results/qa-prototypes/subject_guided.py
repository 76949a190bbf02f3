"""Prototype 2: sentence questions guided by the sentence's subject (its words before the main verb)."""
import json, os, random, re, shutil, sys, tempfile, time
sys.path.insert(0, "/work/main")
from pathlib import Path
from studio import models
models.llama_threads = lambda: 1
from studio.api import Studio
from studio.data import questions as Q, recipes
from studio.data.prepare import read_split

limit, docs = int(sys.argv[1]), sys.argv[2:]
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

MODE = os.environ.get("MODE", "sent")
Q.sentence_questions = sentence_questions
if MODE == "sentonly":
    Q.chunk_pairs = lambda gen, chunk, n: []
orig_chunks = recipes.Context.chunks
def chunks(self, doc):
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
    print(f"## {Path(doc).name} [{MODE}] {qa['chunks']} chunks {secs:.0f}s {qa['chunks']/secs*60:.1f}/min "
          f"gen {qa['generated']} (chunk {qa['from_chunk']} sent {qa['from_sentences']}) fb {qa['fallback']} share {qa['generated_share']}")
    for why, n in sorted(qa["dropped"].items(), key=lambda kv: -kv[1]):
        print(f"   drop {n:4d} {why}")
    rows = [x for x in read_split(r["path"], "train") if not x["meta"].get("fallback")]
    for x in rng.sample(rows, min(12, len(rows))):
        print(f"- [{x['meta'].get('written')}] Q: {x['messages'][0]['content']}\n  A: {x['messages'][-1]['content']}")
    print(flush=True)
