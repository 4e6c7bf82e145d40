"""Sequence log-probabilities of completions, computed without the (B, T, V) logits.

A language model's log-probability of a completion is the sum, over its tokens, of
``log softmax(W h_{t-1})[y_t]``. Only completion tokens need this, and the vocabulary projection
``W h`` is the largest activation in a small model (49k vocabulary x 576 hidden for SmolLM2), so
we gather the hidden states at labelled positions first and project them in row chunks, keeping
only a log-sum-exp per row for the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .data import TokenizedPair

# Elements of a (rows, V) logits chunk; 8M floats = 32 MB in float32.
_CHUNK_ELEMENTS = 8 * 1024 * 1024


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype of the head's matrix products: autocast's when it is on, as a plain
    ``F.linear`` would run; else the common dtype of the inputs."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, acc: torch.dtype
) -> torch.Tensor:
    """``(n, V)`` logits, products in the dtype of the (already cast) inputs, returned in
    ``acc``; autocast off so that forward and backward compute bit for bit the same values."""
    with torch.autocast(hidden.device.type, enabled=False):
        return F.linear(hidden, weight, bias).to(acc)


class _ChunkedLabelLogProb(torch.autograd.Function):
    """``log softmax(h W^T + b)[label]`` per row, computed and differentiated chunk by chunk.

    The backward recomputes each chunk's logits to form ``softmax = exp(logits - lse)`` with the
    log-sum-exp saved by the forward, so both passes must compute the logits in the same dtype:
    the forward records the dtype it used (autocast's bfloat16 under autocast, which a backward
    does not inherit) and the backward casts its inputs the same way. Softmax, log-sum-exp and
    the weight gradient accumulate in float32 whatever the products run in.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,  # (N, H)
        weight: torch.Tensor,  # (V, H)
        bias: torch.Tensor | None,  # (V,)
        labels: torch.Tensor,  # (N,)
        chunk_rows: int,
    ) -> torch.Tensor:
        compute = _compute_dtype(hidden, weight)
        # at least float32 for the softmax, whatever the products run in
        acc = torch.promote_types(compute, torch.float32)
        h_c, w_c = hidden.to(compute), weight.to(compute)
        b_c = None if bias is None else bias.to(compute)
        out = hidden.new_empty(hidden.shape[0], dtype=acc)  # (N,)
        lse = hidden.new_empty(hidden.shape[0], dtype=acc)  # (N,)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits = _logits(h_c[rows], w_c, b_c, acc)  # (n, V)
            lse[rows] = torch.logsumexp(logits, dim=-1)
            out[rows] = logits.gather(1, labels[rows, None]).squeeze(1) - lse[rows]
        ctx.save_for_backward(hidden, weight, bias, labels, lse)
        ctx.chunk_rows = chunk_rows
        ctx.compute = compute
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        compute, acc = ctx.compute, lse.dtype
        h_c, w_c = hidden.to(compute), weight.to(compute)
        b_c = None if bias is None else bias.to(compute)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=acc) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=acc) if need_b and bias is not None else None
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], ctx.chunk_rows):
                rows = slice(start, start + ctx.chunk_rows)
                h = h_c[rows]  # (n, H)
                logits = _logits(h, w_c, b_c, acc)  # (n, V), as in the forward
                g = grad_out[rows, None].to(acc)  # (n, 1)
                # d log p[y] / d logits = onehot(y) - softmax(logits)
                grad_logits = torch.exp(logits - lse[rows, None]).mul_(-g)  # (n, V)
                grad_logits.scatter_add_(1, labels[rows, None], g)
                # products in the forward's dtype, as autograd through F.linear would do
                grad_c = grad_logits.to(compute)  # (n, V)
                if grad_h is not None:
                    grad_h[rows] = (grad_c @ w_c).to(grad_h.dtype)
                if grad_w is not None:
                    if compute == acc:
                        grad_w.addmm_(grad_c.t(), h)
                    else:
                        grad_w += grad_c.t() @ h  # (V, H) summed in float32 across chunks
                if grad_b is not None:
                    grad_b += grad_logits.sum(0)
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
            None,
        )


def label_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> torch.Tensor:
    """Log-probability of each label under ``softmax(hidden @ weight.T + bias)``.

    Args:
        hidden: ``(N, H)`` hidden states at the positions that predict the labels.
        weight: ``(V, H)`` output embedding.
        bias: ``(V,)`` or None.
        labels: ``(N,)`` token ids.

    Returns:
        ``(N,)`` float32 log-probabilities; memory beyond the inputs is one ``(n, V)`` chunk.
    """
    chunk_rows = max(1, _CHUNK_ELEMENTS // weight.shape[0])
    out: torch.Tensor = _ChunkedLabelLogProb.apply(hidden, weight, bias, labels, chunk_rows)
    return out


@dataclass
class PairBatch:
    """A batch of B pairs laid out for one forward pass that scores all 2B completions.

    Sequences ``0..B-1`` are the chosen completions and ``B..2B-1`` the rejected ones.
    """

    input_ids: torch.Tensor  # (R, T) token ids, right-padded
    position_ids: torch.Tensor  # (R, T)
    attention_mask: torch.Tensor  # (R, T) padding mask, or (R, 1, T, T) bool mask (True = attend)
    source: torch.Tensor  # (N,) flat index into (R * T) of the hidden state predicting each label
    labels: torch.Tensor  # (N,) completion token ids
    sequence: torch.Tensor  # (N,) which of the 2B completions each label belongs to
    lengths: torch.Tensor  # (2B,) completion tokens per completion
    weights: torch.Tensor  # (B,) per-pair loss weights
    num_pairs: int
    num_tokens: int  # real (non-pad) tokens fed to the model
    longest: int  # tokens of the longest prompt + completion, as a separate row would hold it

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(
            input_ids=self.input_ids.to(device),
            position_ids=self.position_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            source=self.source.to(device),
            labels=self.labels.to(device),
            sequence=self.sequence.to(device),
            lengths=self.lengths.to(device),
            weights=self.weights.to(device),
            num_pairs=self.num_pairs,
            num_tokens=self.num_tokens,
            longest=self.longest,
        )


def build_batch(pairs: Sequence[TokenizedPair], pad_id: int, share_prompt: bool) -> PairBatch:
    """Lay out pairs for one forward pass.

    ``share_prompt=True``: one row per pair, ``prompt + chosen + rejected``. Rejected tokens get
    the positions that follow the prompt and a mask that hides the chosen tokens from them, so the
    row computes exactly what two separate rows would while encoding the prompt once.
    ``share_prompt=False``: the usual layout, 2B rows, ``prompt + chosen`` then
    ``prompt + rejected``.
    """
    b = len(pairs)
    source: list[int] = []
    labels: list[int] = []
    sequence: list[int] = []
    lengths = [len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs]
    rows: list[list[int]] = []
    positions: list[list[int]] = []
    if share_prompt:
        t = max(p.num_tokens for p in pairs)
        mask = torch.zeros(b, 1, t, t, dtype=torch.bool)
        causal = torch.ones(t, t, dtype=torch.bool).tril_()
        for i, p in enumerate(pairs):
            n_p, n_c, n_r = len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)
            n = n_p + n_c + n_r
            rows.append(p.prompt_ids + p.chosen_ids + p.rejected_ids)
            positions.append(list(range(n_p + n_c)) + list(range(n_p, n_p + n_r)))
            mask[i, 0, :n, :n] = causal[:n, :n]
            mask[i, 0, n_p + n_c : n, n_p : n_p + n_c] = False  # rejected never sees chosen
            mask[i, 0, n:, :].zero_()
            mask[i, 0, range(n, t), range(n, t)] = True  # padding attends to itself only
            base = i * t
            # chosen token j is predicted at position n_p - 1 + j
            source.extend(base + n_p - 1 + j for j in range(n_c))
            labels.extend(p.chosen_ids)
            sequence.extend([i] * n_c)
            # rejected token 0 is predicted by the last prompt token, the rest by their predecessor
            source.append(base + n_p - 1)
            source.extend(base + n_p + n_c + j - 1 for j in range(1, n_r))
            labels.extend(p.rejected_ids)
            sequence.extend([b + i] * n_r)
        attention_mask = mask
        num_tokens = sum(p.num_tokens for p in pairs)
    else:
        seqs = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [
            (p.prompt_ids, p.rejected_ids) for p in pairs
        ]
        t = max(len(a) + len(c) for a, c in seqs)
        attention_mask = torch.zeros(2 * b, t, dtype=torch.long)
        for r, (prompt, completion) in enumerate(seqs):
            n_p, n_c = len(prompt), len(completion)
            rows.append(prompt + completion)
            positions.append(list(range(n_p + n_c)))
            attention_mask[r, : n_p + n_c] = 1
            source.extend(r * t + n_p - 1 + j for j in range(n_c))
            labels.extend(completion)
            sequence.extend([r] * n_c)
        num_tokens = sum(len(a) + len(c) for a, c in seqs)
    input_ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), t), dtype=torch.long)
    for r, (row, pos) in enumerate(zip(rows, positions, strict=True)):
        input_ids[r, : len(row)] = torch.tensor(row)
        position_ids[r, : len(pos)] = torch.tensor(pos)
    return PairBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        source=torch.tensor(source),
        labels=torch.tensor(labels),
        sequence=torch.tensor(sequence),
        lengths=torch.tensor(lengths),
        weights=torch.tensor([p.weight for p in pairs], dtype=torch.float32),
        num_pairs=b,
        num_tokens=num_tokens,
        longest=_longest(pairs),
    )


def _longest(pairs: Sequence[TokenizedPair]) -> int:
    """Tokens of the longest prompt + completion among ``pairs``."""
    return max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs)


def unwrap(model: Any) -> Any:
    """The underlying transformers model (PEFT wrappers removed; LoRA layers stay in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# Attention implementations that apply a custom 4D mask exactly as given: a boolean mask under
# SDPA, an additive one under eager attention. FlashAttention kernels (flash_attention_2/3 and
# the hub kernels) take no arbitrary mask, flex attention wants a BlockMask, so any other
# implementation gets separate rows.
MASK_HONOURING_ATTENTION = ("sdpa", "eager")


def _sliding_window(core: Any) -> int | None:
    """The attention window of a model whose layers (some or all) use one, else None."""
    config = core.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)


def shared_prompt_blocker(model: Any, longest: int) -> str | None:
    """Why ``model`` cannot score shared-prompt rows whose longest prompt + completion has
    ``longest`` tokens, or None when it can.

    The shared layout relies on a custom 4D mask. An attention backend that ignores it would
    let rejected tokens see the chosen ones; and a 4D mask replaces a sliding-window model's
    own mask, so the window no longer applies: harmless only while every sequence fits in it.
    """
    core = unwrap(model)
    attn = getattr(core.config, "_attn_implementation", None) or "eager"
    if attn not in MASK_HONOURING_ATTENTION:
        return f"attention implementation {attn!r} ignores a custom 4D mask"
    window = _sliding_window(core)
    if window is not None and longest > window:
        return f"sequences of {longest} tokens exceed the model's sliding window of {window}"
    return None


def share_prompt_for(model: Any, pairs: Sequence[TokenizedPair], requested: bool) -> bool:
    """Whether to lay ``pairs`` out with shared prompts: when asked and the model honours it."""
    if not requested or not pairs:
        return False
    return shared_prompt_blocker(model, _longest(pairs)) is None


def _supports_chunked_head(core: Any) -> bool:
    config = core.config
    return not any(
        getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale")
    )


def completion_logps(model: Any, batch: PairBatch, chunked: bool = True) -> torch.Tensor:
    """Summed log-probabilities of the 2B completions in ``batch``.

    With ``chunked`` the backbone runs once and only the hidden states that predict completion
    tokens are projected to the vocabulary (see `label_logprobs`). Otherwise the model's own
    forward computes the full ``(R, T, V)`` logits and a log-softmax over them.

    Returns:
        ``(2B,)`` float32 tensor: chosen completions first, then rejected.

    Raises:
        ValueError: a shared-prompt batch that ``model`` would not score as separate rows (see
            `shared_prompt_blocker`; `share_prompt_for` decides the layout beforehand).
    """
    core = unwrap(model)
    mask = batch.attention_mask
    if mask.dim() == 4:
        blocker = shared_prompt_blocker(core, batch.longest)
        if blocker is not None:
            raise ValueError(f"cannot score a shared-prompt batch: {blocker}")
    if mask.dim() == 4 and core.config._attn_implementation != "sdpa":
        # eager attention adds the mask to the scores
        dtype = next(core.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            ~mask, torch.finfo(dtype).min
        )
    kwargs = {
        "input_ids": batch.input_ids,
        "position_ids": batch.position_ids,
        "attention_mask": mask,
        "use_cache": False,
    }
    if chunked and _supports_chunked_head(core):
        backbone = getattr(core, core.base_model_prefix)
        hidden = backbone(**kwargs).last_hidden_state  # (R, T, H)
        selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.source)  # (N, H)
        head = core.get_output_embeddings()
        per_token = label_logprobs(selected, head.weight, head.bias, batch.labels)  # (N,)
    else:
        logits = core(**kwargs).logits  # (R, T, V)
        logps = torch.log_softmax(logits.float(), dim=-1)  # (R, T, V)
        per_token = logps.reshape(-1, logps.shape[-1])[batch.source, batch.labels]  # (N,)
    totals = per_token.new_zeros(2 * batch.num_pairs)  # (2B,)
    return totals.index_add(0, batch.sequence, per_token)
