"""dlbook.distill (chapter 14): the loss against torch references, the students, the training loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlbook import distill


def logits(n=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("t,alpha", [(1.0, 0.5), (2.0, 0.0), (4.0, 0.3), (0.5, 1.0), (8, 0.9)])
def test_loss_matches_torch_references(t, alpha):
    s, te, y = logits()
    ours = distill.distillation_loss(s, te, y, temperature=t, alpha=alpha)
    p_t = torch.softmax(te / t, -1)
    # KL(p_t || p_s) = CE(p_t, p_s) - H(p_t), with the soft-target cross-entropy of F.cross_entropy
    kl = F.cross_entropy(s / t, p_t) - (-(p_t * p_t.log()).sum(-1).mean())
    ref = alpha * F.cross_entropy(s, y) + (1 - alpha) * t**2 * kl
    torch.testing.assert_close(ours, ref)


def test_soft_gradient_is_t_times_difference():
    s, te, _ = logits(n=5, c=4, seed=1)
    s.requires_grad_(True)
    for t in (1.0, 3.0):
        s.grad = None
        distill.distillation_loss(s, te, None, temperature=t, alpha=0.0).backward()
        expected = t * (torch.softmax(s / t, -1) - torch.softmax(te / t, -1)) / s.shape[0]
        torch.testing.assert_close(s.grad, expected.detach())


def test_no_gradient_reaches_teacher():
    s, te, y = logits()
    te.requires_grad_(True)
    distill.distillation_loss(s.requires_grad_(True), te, y, temperature=2.0, alpha=0.5).backward()
    assert te.grad is None


def test_alpha_one_is_cross_entropy():
    s, te, y = logits()
    torch.testing.assert_close(distill.distillation_loss(s, te, y, temperature=3.0, alpha=1.0), F.cross_entropy(s, y))


def test_soft_targets():
    z = torch.tensor([[2.0, 0.0, -1.0]])
    torch.testing.assert_close(distill.soft_targets(z, 2.0), torch.softmax(z / 2, -1))
    assert distill.soft_targets(z, 100.0).max() < 0.35  # nearly uniform


@pytest.mark.parametrize(
    "kwargs,err",
    [
        (dict(temperature=0.0, alpha=0.5), ValueError),
        (dict(temperature=-1.0, alpha=0.5), ValueError),
        (dict(temperature=float("inf"), alpha=0.5), TypeError),
        (dict(temperature=2.0, alpha=1.5), ValueError),
        (dict(temperature=2.0, alpha=-0.1), ValueError),
    ],
)
def test_bad_hyperparameters(kwargs, err):
    s, te, y = logits()
    with pytest.raises(err):
        distill.distillation_loss(s, te, y, **kwargs)


def test_bad_shapes_and_labels():
    s, te, y = logits()
    with pytest.raises(ValueError, match="same shape"):
        distill.distillation_loss(s, te[:, :2], y, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="same shape"):
        distill.distillation_loss(s[0], te[0], y, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="labels are needed"):
        distill.distillation_loss(s, te, None, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="labels must be"):
        distill.distillation_loss(s, te, y[:3], temperature=2.0, alpha=0.5)


# --------------------------------------------------------------------------- students


@pytest.fixture(scope="module")
def tiny_teacher():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, num_labels=2
    )
    return BertForSequenceClassification(cfg).eval()


def test_student_from_teacher_copies_the_chosen_layers(tiny_teacher):
    before = {k: v.clone() for k, v in tiny_teacher.state_dict().items()}
    student = distill.student_from_teacher(tiny_teacher, [0, 3])
    assert student.config.num_hidden_layers == 2 and tiny_teacher.config.num_hidden_layers == 4
    sd = student.state_dict()
    for new, old in enumerate([0, 3]):
        for k, v in tiny_teacher.bert.encoder.layer[old].state_dict().items():
            torch.testing.assert_close(sd[f"bert.encoder.layer.{new}.{k}"], v)
    torch.testing.assert_close(sd["classifier.weight"], before["classifier.weight"])
    for k, v in tiny_teacher.state_dict().items():  # the teacher is untouched
        torch.testing.assert_close(v, before[k])


def test_student_with_all_layers_is_the_teacher(tiny_teacher):
    student = distill.student_from_teacher(tiny_teacher, range(4)).eval()
    x = torch.randint(0, 30522, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(student(input_ids=x).logits, tiny_teacher(input_ids=x).logits)
        assert not torch.allclose(
            distill.student_from_teacher(tiny_teacher, [0, 2]).eval()(input_ids=x).logits, tiny_teacher(input_ids=x).logits
        )


@pytest.mark.parametrize(
    "layers,err", [([0, 4], ValueError), ([-1], ValueError), ([], ValueError), ([1, 1], ValueError), ([0.5], TypeError)]
)
def test_student_from_teacher_bad_layers(tiny_teacher, layers, err):
    with pytest.raises(err):
        distill.student_from_teacher(tiny_teacher, layers)


def test_narrow_student(tiny_teacher):
    emb = tiny_teacher.bert.embeddings.word_embeddings.weight
    a = distill.narrow_student(30522, hidden_size=16, num_layers=2, num_heads=2, teacher_embeddings=emb, seed=3)
    b = distill.narrow_student(30522, hidden_size=16, num_layers=2, num_heads=2, teacher_embeddings=emb, seed=3)
    c = distill.narrow_student(30522, hidden_size=16, num_layers=2, num_heads=2, seed=3)
    assert a.config.intermediate_size == 64 and a.config.num_hidden_layers == 2
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)  # seeded
    wa = a.bert.embeddings.word_embeddings.weight.detach()
    torch.testing.assert_close(wa.norm(dim=1).mean(), emb.detach().norm(dim=1).mean())
    assert not torch.allclose(wa, c.bert.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="divisible"):
        distill.narrow_student(100, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="teacher_embeddings"):
        distill.narrow_student(100, hidden_size=16, num_heads=4, teacher_embeddings=emb)


def test_embedding_projection_is_what_narrow_student_uses(tiny_teacher):
    emb = tiny_teacher.bert.embeddings.word_embeddings.weight.detach()
    proj = distill.embedding_projection(emb, 16, seed=3)  # (32, 16)
    assert proj.shape == (32, 16)
    student = distill.narrow_student(30522, hidden_size=16, num_layers=1, num_heads=2, teacher_embeddings=emb, seed=3)
    torch.testing.assert_close(student.bert.embeddings.word_embeddings.weight.detach(), emb @ proj)
    torch.testing.assert_close((emb @ proj).norm(dim=1).mean(), emb.norm(dim=1).mean())
    with pytest.raises(ValueError, match="hidden_size"):
        distill.embedding_projection(emb, 0)
    with pytest.raises(ValueError, match="vocab_size, d"):
        distill.embedding_projection(emb[0], 16)


def test_projected_embedding_forward_fold_and_errors():
    g = torch.Generator().manual_seed(0)
    table, proj = torch.randn(20, 6, generator=g), torch.randn(6, 4, generator=g)
    pe = distill.ProjectedEmbedding(table, proj, padding_idx=0)
    ids = torch.tensor([[0, 3, 19], [7, 7, 1]])
    torch.testing.assert_close(pe(ids), (table @ proj)[ids])  # (2, 3, 4)
    assert [n for n, _ in pe.named_parameters()] == ["projection"]  # the table is a buffer
    pe(ids).sum().backward()
    assert pe.projection.grad is not None and pe.projection.grad.shape == (6, 4)
    folded = pe.fold()
    assert isinstance(folded, torch.nn.Embedding) and folded.padding_idx == 0 and folded.weight.requires_grad
    torch.testing.assert_close(folded(ids), pe(ids).detach())
    with pytest.raises(ValueError, match="projection"):
        distill.ProjectedEmbedding(table, torch.randn(5, 4))


def test_set_embedding_mode_keeps_the_function(tiny_teacher):
    emb = tiny_teacher.bert.embeddings.word_embeddings.weight
    x = torch.randint(1, 30522, (2, 9))
    for mode in distill.EMBEDDING_MODES:
        student = distill.narrow_student(30522, hidden_size=16, num_layers=1, num_heads=2, teacher_embeddings=emb).eval()
        with torch.no_grad():
            before = student(input_ids=x).logits
        distill.set_embedding_mode(student, mode, tiny_teacher)
        trainable = {n for n, p in student.named_parameters() if p.requires_grad and "word_embeddings" in n}
        expected = {
            "train": {"bert.embeddings.word_embeddings.weight"},
            "freeze": set(),
            "project": {"bert.embeddings.word_embeddings.projection"},
        }[mode]
        assert trainable == expected, mode
        with torch.no_grad():
            torch.testing.assert_close(student(input_ids=x).logits, before, atol=1e-5, rtol=1e-4)
        distill.fold_embeddings(student)
        assert type(student.bert.embeddings.word_embeddings) is torch.nn.Embedding
        assert student.bert.embeddings.word_embeddings.weight.requires_grad
        with torch.no_grad():
            torch.testing.assert_close(student(input_ids=x).logits, before, atol=1e-5, rtol=1e-4)


def test_set_embedding_mode_errors(tiny_teacher):
    student = distill.narrow_student(30522, hidden_size=16, num_layers=1, num_heads=2)  # random table
    with pytest.raises(ValueError, match="unknown embeddings mode"):
        distill.set_embedding_mode(student, "thaw", tiny_teacher)
    with pytest.raises(ValueError, match="not a projection"):
        distill.set_embedding_mode(student, "project", tiny_teacher)
    small = distill.narrow_student(100, hidden_size=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="vocabulary"):
        distill.set_embedding_mode(small, "project", tiny_teacher)


def test_student_settings_embedding_modes():
    for profile in ("smoke", "full"):
        for kind, s in distill.STUDENT_SETTINGS[profile].items():
            assert s.embeddings in distill.EMBEDDING_MODES
            assert s.embeddings == distill.STUDENT_SETTINGS["full"][kind].embeddings  # smoke runs full's code path


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_data():
    from datasets import Dataset
    from transformers import AutoTokenizer

    from dlbook.assets import minilm_path
    from dlbook.finetune import tokenize_dataset

    tok = AutoTokenizer.from_pretrained(minilm_path())
    texts = ["a fine film", "dull and long", "i loved it", "a mess", "great acting", "boring plot", "superb", "awful"]
    ds = Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0, 1, 0, 1, 0]})
    return tokenize_dataset(ds, tok, 16), tok


def test_train_student_alpha_one_equals_label_training(tiny_teacher, tiny_data):
    ds, tok = tiny_data
    recipe = dict(epochs=1, batch_size=4, lr=1e-3, seed=0, show_progress=False)
    t_logits = torch.randn(len(ds), 2)
    a, b, c = (distill.student_from_teacher(tiny_teacher, [0, 1]) for _ in range(3))
    ha = distill.train_student(a, ds, tok, teacher_logits=None, **recipe)
    hb = distill.train_student(b, ds, tok, teacher_logits=t_logits, temperature=2.0, alpha=1.0, **recipe)
    hc = distill.train_student(c, ds, tok, teacher_logits=t_logits, temperature=2.0, alpha=0.5, **recipe)
    assert ha.total_steps == 2
    torch.testing.assert_close(torch.tensor(ha.step_loss), torch.tensor(hb.step_loss))
    assert ha.step_loss != hc.step_loss  # the teacher's logits do change the loss
    with pytest.raises(ValueError, match="teacher_logits"):
        distill.train_student(a, ds, tok, teacher_logits=t_logits[:3], **recipe)


def test_train_student_grouped_and_frozen_embeddings(tiny_teacher, tiny_data):
    ds, tok = tiny_data
    recipe = dict(teacher_logits=None, epochs=1, batch_size=4, lr=1e-3, seed=0, show_progress=False)
    runs = []
    for group in (True, True, False):
        student = distill.student_from_teacher(tiny_teacher, [0, 1])
        student.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        h = distill.train_student(student, ds, tok, group_by_length=group, **recipe)
        runs.append((student, h))
        # frozen rows stay the teacher's; the layers train
        torch.testing.assert_close(
            student.bert.embeddings.word_embeddings.weight, tiny_teacher.bert.embeddings.word_embeddings.weight, rtol=0, atol=0
        )
        assert not torch.equal(
            student.bert.encoder.layer[0].output.dense.weight, tiny_teacher.bert.encoder.layer[0].output.dense.weight
        )
    assert runs[0][1].step_loss == runs[1][1].step_loss  # grouped batches are seeded
    assert runs[0][1].total_steps == runs[2][1].total_steps  # same number of steps, other batches


def test_student_settings_group_by_length():
    for profile in ("smoke", "full"):
        for s in distill.STUDENT_SETTINGS[profile].values():
            assert s.group_by_length


def test_teacher_logits_in_dataset_order(tiny_teacher, tiny_data):
    ds, tok = tiny_data
    out = distill.teacher_logits(tiny_teacher, ds, tok, batch_size=3)
    assert out.shape == (len(ds), 2)
    with torch.no_grad():
        first = tiny_teacher(input_ids=torch.tensor([ds[0]["input_ids"]])).logits[0]
    torch.testing.assert_close(out[0], first, atol=1e-5, rtol=1e-4)


def test_distilled_student_keys_and_errors():
    keys = {str(distill.student_key("smoke", k, d, "cpu")) for k in distill.KINDS for d in (True, False)}
    assert len(keys) == 4
    with pytest.raises(ValueError, match="unknown student kind"):
        distill.distilled_student("smoke", kind="wide")
    with pytest.raises(TypeError):
        distill.distilled_student("smoke", kind="layers", distill="yes")
    with pytest.raises(ValueError):
        distill.distilled_student("nope")


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_distilled_student_cache_folder_is_unchanged(profile, monkeypatch, tmp_path):
    """The folder ``cached_recipe`` picks is the one the students were always cached in.

    The name ``student-<kind>-<kd|ce>-<profile>-<hash of student_key>`` predates the switch to
    :func:`dlbook.modelcache.cached_recipe`; a new name would silently retrain every student.
    """
    from dlbook import modelcache

    seen = []

    def fake_cached_model(kind, described, train, load, *, device, cache_dir=None, label=None):
        seen.append((modelcache.cache_key(kind, described), label, cache_dir))
        return None, None, {}

    monkeypatch.setattr(modelcache, "cached_model", fake_cached_model)
    for kind in distill.KINDS:
        for kd in (True, False):
            distill.distilled_student(profile, kind, kd, cache_dir=tmp_path, device="cpu")
            name, label, cache_dir = seen[-1]
            tag = "kd" if kd else "ce"
            assert name == modelcache.cache_key(
                f"student-{kind}-{tag}-{profile}", distill.student_key(profile, kind, kd, "cpu")
            )
            assert name.startswith(f"student-{kind}-{tag}-{profile}-")
            assert label == f"{profile} {'distilled' if kd else 'label-trained'} {kind} student"
            assert cache_dir == tmp_path
    assert len({name for name, _, _ in seen}) == 4


def test_train_new_student_errors():
    with pytest.raises(ValueError, match="unknown student kind"):
        distill.train_new_student("smoke", "wide", True, "cpu")
    with pytest.raises(TypeError, match="StudentSettings"):
        distill.train_new_student("smoke", "layers", True, "cpu", settings={"epochs": 1})
    with pytest.raises(ValueError):
        distill.train_new_student("nope", "layers", True, "cpu")


def test_set_dropout_sets_every_module_and_gives_back_the_old_value(tiny_teacher, tiny_data):
    ds, tok = tiny_data
    student = distill.student_from_teacher(tiny_teacher, [0, 1]).train()
    batch = {"input_ids": torch.tensor([ds[0]["input_ids"]] * 2)}
    with torch.no_grad():
        torch.manual_seed(0)
        noisy = student(**batch).logits
        assert distill.set_dropout(student, 0.0) == pytest.approx(0.1)  # BERT's default
        assert {m.p for m in student.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
        quiet = student(**batch).logits
        torch.testing.assert_close(quiet, student.eval()(**batch).logits)  # no dropout: train mode == eval mode
        assert not torch.allclose(noisy, quiet)
    assert distill.set_dropout(student, 0.1) == 0.0


@pytest.mark.parametrize("p", [-0.1, 1.0, "0.1", True])
def test_set_dropout_bad_probability(tiny_teacher, p):
    with pytest.raises(ValueError, match="probability"):
        distill.set_dropout(distill.student_from_teacher(tiny_teacher, [0]), p)


def test_set_dropout_needs_agreeing_modules(tiny_teacher):
    with pytest.raises(ValueError, match="no nn.Dropout"):
        distill.set_dropout(torch.nn.Linear(2, 2), 0.0)
    student = distill.student_from_teacher(tiny_teacher, [0])
    student.classifier_dropout = torch.nn.Dropout(0.3)
    with pytest.raises(ValueError, match="disagree"):
        distill.set_dropout(student, 0.0)


def test_student_settings_dropout_is_a_probability():
    for profile in ("smoke", "full"):
        for s in distill.STUDENT_SETTINGS[profile].values():
            assert s.dropout is None or 0.0 <= s.dropout < 1.0


# --------------------------------------------------------------------------- transfer sets and runs


@pytest.mark.parametrize("t,alpha", [(1.0, 0.5), (3.0, 0.2), (2.0, 1.0)])
def test_loss_with_unlabelled_examples(t, alpha):
    s, te, y = logits(n=8)
    y = y.clone()
    y[[1, 4, 5]] = distill.IGNORE_LABEL  # transfer-set snippets: the teacher term only
    known = y != distill.IGNORE_LABEL
    p_t = torch.softmax(te / t, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / t, -1))).sum(-1)  # (N,) per example
    ce = F.cross_entropy(s[known], y[known], reduction="none")  # labelled examples only
    ref = (alpha * ce.sum() + (1 - alpha) * t**2 * kl.sum()) / len(y)
    torch.testing.assert_close(distill.distillation_loss(s, te, y, temperature=t, alpha=alpha), ref)
    none = torch.full_like(y, distill.IGNORE_LABEL)  # a batch with no label at all: finite
    torch.testing.assert_close(
        distill.distillation_loss(s, te, none, temperature=t, alpha=alpha), (1 - alpha) * t**2 * kl.mean()
    )


def test_train_student_transfer_rows(tiny_teacher, tiny_data):
    ds, tok = tiny_data
    recipe = dict(epochs=1, batch_size=4, lr=1e-3, seed=0, show_progress=False)
    t_logits = torch.randn(len(ds), 2)
    unlabelled = ds.map(lambda ex: {"labels": distill.IGNORE_LABEL})
    with pytest.raises(ValueError, match="teacher_logits"):  # labels-only cannot use them
        distill.train_student(distill.student_from_teacher(tiny_teacher, [0]), unlabelled, tok, teacher_logits=None, **recipe)
    # with alpha = 0 the labels are never read: labelled and unlabelled data train alike
    a, b = (distill.student_from_teacher(tiny_teacher, [0]) for _ in range(2))
    ha = distill.train_student(a, ds, tok, teacher_logits=t_logits, alpha=0.0, **recipe)
    hb = distill.train_student(b, unlabelled, tok, teacher_logits=t_logits, alpha=0.0, **recipe)
    torch.testing.assert_close(torch.tensor(ha.step_loss), torch.tensor(hb.step_loss))
    hc = distill.train_student(
        distill.student_from_teacher(tiny_teacher, [0]), unlabelled, tok, teacher_logits=t_logits, alpha=0.5, **recipe
    )
    assert all(torch.isfinite(torch.tensor(hc.step_loss)))


def test_run_result_round_trip():
    s = distill.STUDENT_SETTINGS["smoke"]["layers"]
    r = distill.RunResult("x", "layers", True, s, 32, np.array([True, False, True]), np.array([False, True]), 1.5)
    back = distill.RunResult.from_dict(r.to_dict(), from_cache=True)
    assert back.settings == s and back.labelled == 32 and back.from_cache
    assert back.val_accuracy == pytest.approx(2 / 3) and back.test_accuracy == 0.5
    np.testing.assert_array_equal(back.val_correct, r.val_correct)


def test_student_run_reads_its_cache_and_checks_arguments(tmp_path):
    s = distill.STUDENT_SETTINGS["smoke"]["layers"]
    args = dict(n_val=4, n_test=2, max_length=128, device="cpu", cache_dir=tmp_path)
    file = distill.run_cache_file("smoke", "layers", True, s, labelled=32, **args)
    assert file != distill.run_cache_file("smoke", "layers", True, s, labelled=None, **args)
    assert file != distill.run_cache_file("smoke", "layers", False, s, labelled=32, **args)
    file.parent.mkdir(parents=True)
    stored = distill.RunResult("old name", "layers", True, s, 32, np.ones(4, bool), np.zeros(2, bool), 2.0)
    file.write_text(json.dumps(stored.to_dict()))
    got = distill.student_run("smoke", "layers", True, s, labelled=32, name="new name", **args)
    assert got.from_cache and got.name == "new name" and got.val_accuracy == 1.0
    with pytest.raises(ValueError, match="needs distill=True"):
        distill.student_run("smoke", "layers", False, s, labelled=32, **args)
    with pytest.raises(ValueError, match="labelled must be"):
        distill.student_run("smoke", "layers", True, s, labelled=0, **args)
    with pytest.raises(ValueError, match="labelled must be"):
        distill.student_run("smoke", "layers", True, s, labelled=s.n_train + 1, **args)
    with pytest.raises(TypeError, match="StudentSettings"):
        distill.student_run("smoke", "layers", True, {"epochs": 1}, **args)
    with pytest.raises(ValueError, match="unknown student kind"):
        distill.student_run("smoke", "wide", True, **args)
