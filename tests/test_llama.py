"""dlbook.nn.llama against Hugging Face's Llama, forward and backward, on a tiny random model."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM
from transformers.models.llama import modeling_llama as hf_llama

from dlbook.nn.llama import (
    DecoderBlock,
    GroupedQueryAttention,
    KVCache,
    LlamaLM,
    RMSNorm,
    SwiGLU,
    apply_rope,
    repeat_kv,
    rope_cos_sin,
    rotate_half,
    tiny_config,
)

F64 = dict(atol=1e-10, rtol=1e-10)
# Hugging Face's eager attention takes its softmax in float32 and its RMSNorm rounds to float32
# whatever the input, so the models are compared in float32, to float32 rounding.
F32 = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture
def pair():
    torch.manual_seed(0)
    hf = LlamaForCausalLM(tiny_config()).eval()
    return hf, LlamaLM.from_hf(hf)


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_tiny_config_builds_both_models():
    cfg = tiny_config()
    hf = LlamaForCausalLM(cfg)
    ours = LlamaLM.from_config(cfg)
    count = sum(p.numel() for p in hf.parameters())
    assert count == sum(p.numel() for p in ours.parameters()) == 102_720
    assert tiny_config(num_hidden_layers=3).num_hidden_layers == 3


def test_rmsnorm_matches_hf_forward_and_backward():
    torch.manual_seed(1)
    ours, ref = RMSNorm(16, eps=1e-5), hf_llama.LlamaRMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    x = torch.randn(3, 5, 16, requires_grad=True)
    y_ours, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y_ours, y_ref, **F32)
    g = torch.randn_like(y_ours)
    (gx_ours,) = torch.autograd.grad(y_ours, x, g, retain_graph=True)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g, retain_graph=True)
    torch.testing.assert_close(gx_ours, gx_ref, **F32)
    y_ours.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **F32)
    # float64 stays float64: the definition, computed directly
    x64 = x.detach().double()
    want = x64 / x64.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * ours.weight.detach().double()
    torch.testing.assert_close(ours.double()(x64), want, **F64)
    # float16 in, float16 out, with float32 statistics as in the reference
    h = torch.randn(2, 16).half()
    torch.testing.assert_close(RMSNorm(16, 1e-5)(h), hf_llama.LlamaRMSNorm(16, eps=1e-5)(h))


def test_rope_matches_hf_rotary_embedding():
    cfg = tiny_config()
    rotary = hf_llama.LlamaRotaryEmbedding(cfg)
    positions = torch.arange(7)[None]  # (1, 7)
    x = torch.randn(1, 7, cfg.hidden_size)
    cos_ref, sin_ref = rotary(x, positions)
    cos, sin = rope_cos_sin(positions, cfg.head_dim, 10_000.0)
    torch.testing.assert_close(cos, cos_ref, atol=0, rtol=0)
    torch.testing.assert_close(sin, sin_ref, atol=0, rtol=0)
    q = torch.randn(1, 4, 7, cfg.head_dim, requires_grad=True)
    k = torch.randn(1, 2, 7, cfg.head_dim)
    q_ref, _ = hf_llama.apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
    q_ours = apply_rope(q, cos[0], sin[0])
    torch.testing.assert_close(q_ours, q_ref, atol=0, rtol=0)
    g = torch.randn_like(q_ours)
    torch.testing.assert_close(torch.autograd.grad(q_ours, q, g)[0], torch.autograd.grad(q_ref, q, g)[0])
    torch.testing.assert_close(rotate_half(k), hf_llama.rotate_half(k), atol=0, rtol=0)


def test_rope_is_a_rotation_and_scores_depend_on_offset_only():
    torch.manual_seed(2)
    d = 8
    q, k = torch.randn(1, 1, 1, d, dtype=torch.float64), torch.randn(1, 1, 1, d, dtype=torch.float64)

    def at(x, pos):
        cos, sin = rope_cos_sin(torch.tensor([pos]), d, dtype=torch.float64)
        return apply_rope(x, cos, sin)

    torch.testing.assert_close(at(q, 5).norm(), q.norm())  # lengths kept
    s = [(at(q, m) * at(k, m - 3)).sum() for m in (3, 10, 40)]  # same offset 3, different places
    # the angles are computed in float32, as in the reference: equal to float32 rounding
    torch.testing.assert_close(s[0], s[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s[0], s[2], atol=1e-5, rtol=1e-5)
    assert not math.isclose(float(s[0]), float((at(q, 10) * at(k, 9)).sum()), rel_tol=1e-3)


def test_swiglu_matches_hf_mlp_forward_and_backward():
    torch.manual_seed(3)
    cfg = tiny_config()
    ref = hf_llama.LlamaMLP(cfg).double()
    ours = SwiGLU(cfg.hidden_size, cfg.intermediate_size).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, cfg.hidden_size, dtype=torch.float64)
    y_ours, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y_ours, y_ref, **F64)
    y_ours.sum().backward()
    y_ref.sum().backward()
    for name, grad in _grads(ours).items():
        torch.testing.assert_close(grad, dict(ref.named_parameters())[name].grad, **F64)


def test_repeat_kv_matches_hf():
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(repeat_kv(x, 3), hf_llama.repeat_kv(x, 3), atol=0, rtol=0)
    assert repeat_kv(x, 1) is x


def test_attention_and_block_match_hf_layer(pair):
    hf, ours = pair
    cfg = hf.config
    layer_ref, layer_ours = hf.model.layers[0], ours.layers[0]
    x = torch.randn(2, 6, cfg.hidden_size, requires_grad=True)
    positions = torch.arange(6)[None].expand(2, 6)
    cos, sin = hf.model.rotary_emb(x, positions)
    mask = torch.full((6, 6), float("-inf")).triu(1)[None, None]
    out_ref = layer_ref(x, attention_mask=mask, position_embeddings=(cos, sin), position_ids=positions)
    out_ref = out_ref[0] if isinstance(out_ref, tuple) else out_ref
    out_ours, (k, v) = layer_ours(x, cos, sin)
    assert k.shape == v.shape == (2, cfg.num_key_value_heads, 6, cfg.head_dim)
    torch.testing.assert_close(out_ours, out_ref, **F32)
    g = torch.randn_like(out_ours)
    torch.testing.assert_close(torch.autograd.grad(out_ours, x, g)[0], torch.autograd.grad(out_ref, x, g)[0], **F32)


def test_full_model_matches_hf_forward_and_backward(pair):
    hf, ours = pair
    ids = torch.randint(0, hf.config.vocab_size, (2, 12))
    logits_ref = hf(ids).logits
    logits, cache = ours(ids)
    torch.testing.assert_close(logits, logits_ref, **F32)
    assert isinstance(cache, KVCache) and cache.length == len(cache) == 12

    # backward: the same loss on both models' logits, every parameter's gradient compared
    def loss(lg):
        return F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), ids[:, 1:].reshape(-1))

    loss(logits).backward()
    loss(logits_ref).backward()
    theirs = dict(hf.named_parameters())
    mine = _grads(ours)
    assert len(mine) == len(theirs)  # tied: one embedding matrix in both
    for name, grad in mine.items():
        torch.testing.assert_close(grad, theirs[f"model.{name}"].grad, **F32)


def test_untied_model_loads_its_own_head():
    torch.manual_seed(4)
    hf = LlamaForCausalLM(tiny_config(tie_word_embeddings=False)).eval()
    ours = LlamaLM.from_hf(hf)
    assert ours.lm_head is not None and not torch.equal(ours.output_weight, ours.embed_tokens.weight)
    ids = torch.randint(0, 256, (1, 9))
    torch.testing.assert_close(ours(ids)[0], hf(ids).logits, **F32)


def test_kv_cache_gives_the_same_logits_as_one_pass(pair):
    hf, ours = pair
    ids = torch.randint(0, 256, (3, 10))
    full, _ = ours(ids, use_cache=False)
    first, cache = ours(ids[:, :4])
    steps = [first]
    for t in range(4, 10):
        logits, same = ours(ids[:, t : t + 1], cache)
        assert same is cache and cache.length == t + 1
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **F32)
    cfg = hf.config
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4  # K and V, float32
    assert cache.nbytes() == 3 * 10 * per_token
    # and against Hugging Face's own cache
    out = hf(ids[:, :4], use_cache=True)
    nxt = hf(ids[:, 4:5], past_key_values=out.past_key_values, use_cache=True).logits
    torch.testing.assert_close(steps[1], nxt, **F32)
    assert KVCache().length == 0 and KVCache().nbytes() == 0


def test_gqa_shares_key_value_heads():
    attn = GroupedQueryAttention(d_model=32, n_heads=4, n_kv_heads=2)
    assert attn.k_proj.weight.shape == (2 * 8, 32) and attn.q_proj.weight.shape == (4 * 8, 32)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        GroupedQueryAttention(d_model=32, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="or give head_dim"):
        GroupedQueryAttention(d_model=30, n_heads=4, n_kv_heads=2)


def test_bad_inputs_get_clear_errors(pair):
    _, ours = pair
    with pytest.raises(TypeError, match="ids must be a torch.Tensor"):
        ours([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"ids must be \(batch, seq\)"):
        ours(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integer ids"):
        ours(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"outside \[0, vocab_size = 256\)"):
        ours(torch.tensor([[1, 256]]))
    with pytest.raises(ValueError, match=r"outside \[0, vocab_size"):
        ours(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="pass max_positions = 64"):
        ours(torch.zeros(1, 65, dtype=torch.long))
    _, cache = ours(torch.zeros(1, 60, dtype=torch.long))
    with pytest.raises(ValueError, match=r"60 cached \+ 5 new"):
        ours(torch.zeros(1, 5, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="the cache holds 1 sequences"):
        ours(torch.zeros(2, 1, dtype=torch.long), cache)
    with pytest.raises(TypeError, match="cache must be a KVCache"):
        ours(torch.zeros(1, 1, dtype=torch.long), cache=(1, 2))
    with pytest.raises(ValueError, match="use_cache=False"):
        ours(torch.zeros(1, 1, dtype=torch.long), cache, use_cache=False)
    with pytest.raises(ValueError, match="size 16 in its last dimension"):
        RMSNorm(16)(torch.randn(2, 8))
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope_cos_sin(torch.arange(3), 7)
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        rope_cos_sin(torch.arange(3.0), 8)
    with pytest.raises(ValueError, match="seq = 5"):
        cos, sin = rope_cos_sin(torch.arange(4), 8)
        apply_rope(torch.randn(1, 2, 5, 8), cos, sin)
    with pytest.raises(ValueError, match="rank|dimensions"):
        DecoderBlock(16, 2, 1, 32)(torch.randn(4, 16), *rope_cos_sin(torch.arange(4), 8))
    with pytest.raises(TypeError, match="needs a transformers LlamaForCausalLM"):
        LlamaLM.from_hf(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="rope_type 'default' only"):
        LlamaLM.from_config(tiny_config(rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}))
