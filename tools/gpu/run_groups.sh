# Run chapters under nbval on the GPU machine: run_groups.sh LIMIT_S "nb nb" "nb nb" ...
# Groups run in parallel (one pytest each, its chapters in turn); executed notebooks, logs,
# results.json/md (tools/collect_results.py) land in $OUT.
limit=$1; shift
i=0
for g in "$@"; do
  i=$((i+1)); d=/tmp/run$i; mkdir -p $d
  ( start=$(date +%s); timeout $limit python3 -m pytest -q -rf --tb=short -p nbval_capture -p no:cacheprovider --nbval-lax --nbval-cell-timeout=1200 \
      --nbval-capture=$d/.jupyter_cache $g > $d/log.txt 2>&1; echo "rc=$? wall=$(( $(date +%s) - start ))s group=[$g]" >> $d/log.txt ) &
done
wait
mkdir -p /tmp/exec
python3 - <<'PY'
import json, glob, shutil, os
t = {}
for d in sorted(glob.glob("/tmp/run*/executed")):
    f = os.path.join(d, "timings.json")
    if os.path.exists(f): t.update(json.load(open(f)))
    for nb in glob.glob(d + "/*.ipynb"): shutil.copy(nb, "/tmp/exec/")
json.dump(t, open("/tmp/exec/timings.json", "w"), indent=2, sort_keys=True)
PY
for d in /tmp/run*; do echo "=== $d"; tail -5 $d/log.txt; cp $d/log.txt $OUT/log_$(basename $d).txt; done
python3 tools/collect_results.py /tmp/exec $OUT/results.json; cp $OUT/results.md $OUT/ 2>/dev/null; cat /tmp/exec/timings.json
tar -C /tmp -cJf $OUT/executed.tar.xz exec
ls -la $OUT
