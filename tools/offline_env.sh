# The environment every test and build runs in (sourced by the Makefile recipes and tools/*.sh):
# no network except loopback, no hub, static progress bars (plots use the kernel's inline backend).
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export DLBOOK_BLOCK_NETWORK=1 PYTHONPATH="$PWD/tests/offline:$PWD/tests/plugins${PYTHONPATH:+:$PYTHONPATH}"
export DLBOOK_STATIC_OUTPUT=1 TOKENIZERS_PARALLELISM=false
# Library progress bars (transformers, datasets, hub) are widgets in Jupyter; a static page
# cannot show them, so they are off in builds and tests (the chapters' own bars are text).
export HF_HUB_DISABLE_PROGRESS_BARS=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
