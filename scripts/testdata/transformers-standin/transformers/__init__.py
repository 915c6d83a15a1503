"""A stand-in for transformers' Qwen3Model, only to run scripts/gpu-anchor.py's plumbing on a CPU
where transformers is not installed: the same parameter names and call shapes, a plain Qwen3
forward with a growing per-layer cache that can be cropped. Not the real library."""
import types

import torch
import torch.nn as nn

__version__ = "stand-in"


class Qwen3Config:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Norm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class _Cache:
    def __init__(self, layers):
        self.k = [None] * layers
        self.v = [None] * layers

    def get_seq_length(self):
        return 0 if self.k[0] is None else self.k[0].shape[2]

    def crop(self, n):
        for i in range(len(self.k)):
            if self.k[i] is not None:
                self.k[i], self.v[i] = self.k[i][:, :, :n], self.v[i][:, :, :n]


class Qwen3Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        H, hd, nh, nkv, I, eps = c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, c.rms_norm_eps
        self.embed_tokens = nn.Embedding(c.vocab_size, H)
        self.layers = nn.ModuleList()
        for _ in range(c.num_hidden_layers):
            l = nn.Module()
            l.input_layernorm, l.post_attention_layernorm = _Norm(H, eps), _Norm(H, eps)
            a = nn.Module()
            a.q_proj, a.k_proj, a.v_proj = nn.Linear(H, nh * hd, bias=False), nn.Linear(H, nkv * hd, bias=False), nn.Linear(H, nkv * hd, bias=False)
            a.o_proj = nn.Linear(nh * hd, H, bias=False)
            a.q_norm, a.k_norm = _Norm(hd, eps), _Norm(hd, eps)
            l.self_attn = a
            m = nn.Module()
            m.gate_proj, m.up_proj, m.down_proj = nn.Linear(H, I, bias=False), nn.Linear(H, I, bias=False), nn.Linear(I, H, bias=False)
            l.mlp = m
            self.layers.append(l)
        self.norm = _Norm(H, eps)
        self.rotary_emb = nn.Module()
        theta = c.rope_parameters["rope_theta"] if hasattr(c, "rope_parameters") else c.rope_theta
        self.rotary_emb.register_buffer("inv_freq", (theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)).float(), persistent=False)

    def _rope(self, x, pos):
        f = pos[:, None].float() * self.rotary_emb.inv_freq[None, :]
        cos, sin = torch.cat([f.cos(), f.cos()], -1).to(x.dtype), torch.cat([f.sin(), f.sin()], -1).to(x.dtype)
        h = x.shape[-1] // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * cos + rot * sin

    def forward(self, input_ids, past_key_values=None, use_cache=False):
        c = self.c
        B, T = input_ids.shape
        hd, nh, nkv = c.head_dim, c.num_attention_heads, c.num_key_value_heads
        cache = past_key_values if past_key_values is not None else (_Cache(len(self.layers)) if use_cache else None)
        p0 = cache.get_seq_length() if cache is not None else 0
        pos = torch.arange(p0, p0 + T, device=input_ids.device)
        h = self.embed_tokens(input_ids)
        for i, l in enumerate(self.layers):
            a = l.self_attn
            x = l.input_layernorm(h)
            q = a.q_norm(a.q_proj(x).view(B, T, nh, hd)).transpose(1, 2)
            k = a.k_norm(a.k_proj(x).view(B, T, nkv, hd)).transpose(1, 2)
            v = a.v_proj(x).view(B, T, nkv, hd).transpose(1, 2)
            q, k = self._rope(q, pos), self._rope(k, pos)
            if cache is not None:
                if cache.k[i] is not None:
                    k, v = torch.cat([cache.k[i], k], 2), torch.cat([cache.v[i], v], 2)
                cache.k[i], cache.v[i] = k, v
            k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
            s = (q.float() @ k.float().transpose(-1, -2)) / hd ** 0.5
            n = k.shape[2]
            mask = torch.arange(n, device=s.device)[None, :] > (pos[:, None])
            s = s.masked_fill(mask, float("-inf"))
            o = (s.softmax(-1) @ v.float()).to(h.dtype).transpose(1, 2).reshape(B, T, nh * hd)
            h = h + a.o_proj(o)
            x = l.post_attention_layernorm(h)
            m = l.mlp
            h = h + m.down_proj(nn.functional.silu(m.gate_proj(x)) * m.up_proj(x))
        return types.SimpleNamespace(last_hidden_state=self.norm(h), past_key_values=cache if use_cache else None)
