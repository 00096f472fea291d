"""Named mistakes: plausible wrong versions of each exercise, which its grader must fail.

An exercise is only as honest as the tests that grade it. For every exercise in
tutorials/exercises.py REGISTRY, MISTAKES below lists wrong versions a student (or a developer)
plausibly writes, each as a source patch inside the exercise's region:

    Mistake("encoder_block", "ffn residual from x instead of h",
            old="y = self.output(self.intermediate(h), h)",
            new="y = self.output(self.intermediate(h), x)")

`old` must occur exactly once between the exercise's `# BEGIN EXERCISE` / `# END EXERCISE`
markers; `new` replaces it. tests/test_mistakes.py (slow) writes a student copy, applies each
mistake to it alone, and runs the exercise's mapped tests (the grader's selection: its test files
and -k keywords); each mistake must make at least one of them FAIL. The fast tests check that
every `old` still matches its region and that every exercise has at least MIN_PER_EXERCISE of them.

Teachers adding an exercise: add at least three mistakes for it here, the ones you would expect to
see in a class (a wrong residual, a missing scale, an off-by-one, a swapped label, a filter
skipped). Run `python -m tutorials.mistakes --only NAME` to see which test catches each one;
when one survives, add a test to the exercise's own test files that fails on it, named for the
property it checks, with a message that shows the numbers.

The same machinery runs `python -m tests.mutants` (`make mutants`): hand-written mutants of the
math layer, caught by any test of the suite's files for that layer.

How it runs fast: one parent process imports torch, pytest and hypothesis once, then forks one
child per patch; the child forgets the project's modules, imports the patched copy and runs pytest
with -x (the first failing test is enough). About one second per patch instead of about 4 s of imports.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tutorials import exercises as ex  # noqa: E402

MIN_PER_EXERCISE = 3


@dataclass(frozen=True)
class Mistake:
    """A wrong version of one exercise: `old` (unique inside the region) becomes `new`.

    caught_by: optional, a test name (a -k word) among the exercise's mapped tests that fails on
    this mistake. The check runs that test first (seconds instead of the whole selection) and
    falls back to the whole selection when it passes, so a stale name costs time, never a verdict.
    """
    exercise: str
    name: str
    old: str
    new: str
    caught_by: str = ""


MISTAKES: tuple[Mistake, ...] = (
    # ---------------------------------------------------------------- Bronze
    Mistake("masks", "padding mask not broadcast over queries and heads (B, T) kept",
            "return attention_mask.bool()[:, None, None, :]", "return attention_mask.bool()",
            caught_by="test_padding_mask_is_B11T_and_true_exactly_at_real_tokens"),
    Mistake("masks", "padding mask inverted (True at the padding)",
            "return attention_mask.bool()[:, None, None, :]",
            "return ~attention_mask.bool()[:, None, None, :]",
            caught_by="test_padding_mask_is_B11T_and_true_exactly_at_real_tokens"),
    Mistake("masks", "causal mask off by one (a query sees the next key)",
            "return (k_pos <= q_pos)[None, None]", "return (k_pos <= q_pos + 1)[None, None]",
            caught_by="test_causal_mask_is_the_lower_triangle"),
    Mistake("masks", "causal mask excludes the diagonal (a query cannot see itself)",
            "return (k_pos <= q_pos)[None, None]", "return (k_pos < q_pos)[None, None]",
            caught_by="test_causal_mask_is_the_lower_triangle"),
    Mistake("masks", "causal mask ignores the KV-cache offset",
            "q_pos = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)",
            "q_pos = torch.arange(q_len, device=device)[:, None]",
            caught_by="test_causal_mask_with_fewer_queries_is_the_last_rows_of_the_full_triangle"),
    Mistake("masks", "causal mask transposed (upper triangle)",
            "return (k_pos <= q_pos)[None, None]", "return (k_pos >= q_pos)[None, None]",
            caught_by="test_causal_mask_is_the_lower_triangle"),

    Mistake("attention", "no 1/sqrt(d_k) scaling",
            "scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)",
            "scores = query @ key.transpose(-2, -1)",
            caught_by="test_hand_written_attention_equals_torch_sdpa"),
    Mistake("attention", "scaled by 1/d_k instead of 1/sqrt(d_k)",
            "scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)",
            "scores = query @ key.transpose(-2, -1) / d_k",
            caught_by="test_hand_written_attention_equals_torch_sdpa"),
    Mistake("attention", "mask not applied",
            "scores = scores.masked_fill(~mask, mask_value(scores.dtype))", "scores = scores",
            caught_by="test_attention_rows_sum_to_one_and_blocked_keys_get_exactly_zero"),
    Mistake("attention", "mask applied inverted (allowed keys blocked)",
            "scores = scores.masked_fill(~mask, mask_value(scores.dtype))",
            "scores = scores.masked_fill(mask, mask_value(scores.dtype))",
            caught_by="test_attention_rows_sum_to_one_and_blocked_keys_get_exactly_zero"),
    Mistake("attention", "softmax over the queries (dim -2)",
            "weights = torch.softmax(scores, dim=-1)", "weights = torch.softmax(scores, dim=-2)",
            caught_by="test_attention_rows_sum_to_one_and_blocked_keys_get_exactly_zero"),
    Mistake("attention", "dropout also at evaluation",
            "if training and dropout_p > 0.0:", "if dropout_p > 0.0:",
            caught_by="test_attention_dropout_acts_on_the_weights_and_only_in_training"),

    Mistake("log_softmax", "no max subtraction (overflows for large logits)",
            "shifted = logits - m  # (z - m) <= 0: exp() cannot overflow", "shifted = logits",
            caught_by="test_log_softmax_is_stable_for_huge_logits"),
    Mistake("log_softmax", "normaliser summed over the wrong axis",
            "return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))",
            "return shifted - torch.log(torch.exp(shifted).sum(dim=0, keepdim=True))",
            caught_by="test_log_softmax_equals_torch"),
    Mistake("log_softmax", "log p = z - m (normaliser dropped)",
            "return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))",
            "return shifted",
            caught_by="test_log_softmax_equals_torch"),
    Mistake("log_softmax", "mean of exp instead of the sum",
            "return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))",
            "return shifted - torch.log(torch.exp(shifted).mean(dim=dim, keepdim=True))",
            caught_by="test_log_softmax_equals_torch"),

    Mistake("cross_entropy", "-100 rows counted in the mean",
            "return total / keep.sum().clamp_min(1)", "return total / targets.numel()",
            caught_by="test_cross_entropy_equals_torch_with_ignored_positions"),
    Mistake("cross_entropy", "-100 rows not zeroed (class 0 counted)",
            "nll = torch.where(keep, nll, torch.zeros_like(nll))", "nll = nll",
            caught_by="test_cross_entropy_equals_torch_with_ignored_positions"),
    Mistake("cross_entropy", "sign flipped (+log p)",
            "nll = log_normaliser.squeeze(-1) - shifted[rows, safe_targets]",
            "nll = shifted[rows, safe_targets] - log_normaliser.squeeze(-1)",
            caught_by="test_cross_entropy_equals_torch_with_ignored_positions"),
    Mistake("cross_entropy", "mean over no kept row divides by zero (NaN)",
            "return total / keep.sum().clamp_min(1)", "return total / keep.sum()",
            caught_by="test_cross_entropy_equals_torch_with_ignored_positions"),
    Mistake("cross_entropy", "'sum' returns the mean",
            "if reduction == \"sum\":\n        return total",
            "if reduction == \"sum\":\n        return total / keep.sum().clamp_min(1)",
            caught_by="test_cross_entropy_equals_torch_with_ignored_positions"),

    Mistake("mlm_loss", "sum instead of the requested reduction",
            "return cross_entropy(prediction_logits.reshape(-1, V), labels.reshape(-1), reduction=reduction)",
            "return cross_entropy(prediction_logits.reshape(-1, V), labels.reshape(-1), reduction=\"sum\")",
            caught_by="test_mlm_loss_of_uniform_logits_is_log_V_per_masked_token"),
    Mistake("mlm_loss", "-100 passed as a class (ignore_index off)",
            "return cross_entropy(prediction_logits.reshape(-1, V), labels.reshape(-1), reduction=reduction)",
            "return cross_entropy(prediction_logits.reshape(-1, V), labels.reshape(-1).clamp_min(0), reduction=reduction)",
            caught_by="test_mlm_loss_ignores_the_logits_of_unmasked_positions"),
    Mistake("mlm_loss", "only the first sequence of the batch scored",
            "return cross_entropy(prediction_logits.reshape(-1, V), labels.reshape(-1), reduction=reduction)",
            "return cross_entropy(prediction_logits.reshape(-1, V)[:labels.size(-1)], labels.reshape(-1)[:labels.size(-1)], reduction=reduction)",
            caught_by="test_mlm_loss_of_uniform_logits_is_log_V_per_masked_token"),

    Mistake("nsp_loss", "NSP labels swapped (0 read as NotNext)",
            "return cross_entropy(seq_relationship_logits.reshape(-1, 2), next_sentence_label.reshape(-1),",
            "return cross_entropy(seq_relationship_logits.reshape(-1, 2), 1 - next_sentence_label.reshape(-1),",
            caught_by="test_nsp_loss_equals_torch_cross_entropy_on_two_classes"),
    Mistake("nsp_loss", "always sum",
            "                         reduction=reduction)", "                         reduction=\"sum\")",
            caught_by="test_nsp_loss_equals_torch_cross_entropy_on_two_classes"),
    Mistake("nsp_loss", "logits columns swapped",
            "return cross_entropy(seq_relationship_logits.reshape(-1, 2), next_sentence_label.reshape(-1),",
            "return cross_entropy(seq_relationship_logits.reshape(-1, 2).flip(-1), next_sentence_label.reshape(-1),",
            caught_by="test_nsp_loss_equals_torch_cross_entropy_on_two_classes"),

    Mistake("causal_lm_loss", "no causal shift (logits at t scored against x_t)",
            "shifted_logits = logits[:, :-1, :].reshape(-1, V)  # (B * (T-1), V)\n"
            "    shifted_labels = labels[:, 1:].reshape(-1)",
            "shifted_logits = logits.reshape(-1, V)\n    shifted_labels = labels.reshape(-1)",
            caught_by="test_causal_lm_loss_equals_the_manual_shift_with_torch_cross_entropy"),
    Mistake("causal_lm_loss", "shift the wrong way (logits[1:] vs labels[:-1])",
            "shifted_logits = logits[:, :-1, :].reshape(-1, V)  # (B * (T-1), V)\n"
            "    shifted_labels = labels[:, 1:].reshape(-1)",
            "shifted_logits = logits[:, 1:, :].reshape(-1, V)\n    shifted_labels = labels[:, :-1].reshape(-1)",
            caught_by="test_causal_lm_loss_equals_the_manual_shift_with_torch_cross_entropy"),
    Mistake("causal_lm_loss", "-100 padding counted (labels clamped)",
            "shifted_labels = labels[:, 1:].reshape(-1)  # (B * (T-1),)",
            "shifted_labels = labels[:, 1:].reshape(-1).clamp_min(0)",
            caught_by="test_causal_lm_loss_equals_the_manual_shift_with_torch_cross_entropy"),
    Mistake("causal_lm_loss", "reduction ignored (always mean)",
            "return cross_entropy(shifted_logits, shifted_labels, reduction=reduction)",
            "return cross_entropy(shifted_logits, shifted_labels)",
            caught_by="test_causal_lm_loss_equals_the_manual_shift_with_torch_cross_entropy"),

    # ---------------------------------------------------------------- Silver
    Mistake("encoder_block", "FFN residual from x instead of h",
            "y = self.output(self.intermediate(h), h)", "y = self.output(self.intermediate(h), x)",
            caught_by="test_encoder_block_is_the_post_ln_formula_on_perturbed_weights"),
    Mistake("encoder_block", "FFN reads x instead of h",
            "y = self.output(self.intermediate(h), h)", "y = self.output(self.intermediate(x), h)",
            caught_by="test_encoder_block_is_the_post_ln_formula_on_perturbed_weights"),
    Mistake("encoder_block", "attention mask not passed",
            "h, weights = self.attention(x, mask=mask, output_attentions=output_attentions)",
            "h, weights = self.attention(x, mask=None, output_attentions=output_attentions)",
            caught_by="test_encoder_block_ignores_padded_tokens"),
    Mistake("encoder_block", "FFN skipped",
            "y = self.output(self.intermediate(h), h)", "y = h",
            caught_by="test_encoder_block_is_the_post_ln_formula_on_perturbed_weights"),

    Mistake("decoder_block", "MLP reads ln_1",
            "x = x + self.dropout(self.mlp(self.ln_2(x)))", "x = x + self.dropout(self.mlp(self.ln_1(x)))",
            caught_by="test_decoder_block_is_the_pre_ln_formula_with_distinct_layer_norms"),
    Mistake("decoder_block", "attention reads ln_2",
            "a, weights = self.attn(self.ln_1(x), mask=mask, kv_cache=kv_cache,",
            "a, weights = self.attn(self.ln_2(x), mask=mask, kv_cache=kv_cache,",
            caught_by="test_decoder_block_is_the_pre_ln_formula_with_distinct_layer_norms"),
    Mistake("decoder_block", "no attention residual (x = attention output)",
            "x = x + self.dropout(a)", "x = self.dropout(a)",
            caught_by="test_decoder_block_is_the_identity_when_its_sublayers_output_zero"),
    Mistake("decoder_block", "post-LN MLP (LayerNorm after the residual)",
            "x = x + self.dropout(self.mlp(self.ln_2(x)))", "x = self.ln_2(x + self.dropout(self.mlp(x)))",
            caught_by="test_decoder_block_is_the_identity_when_its_sublayers_output_zero"),
    Mistake("decoder_block", "cross-attention reads the un-normalised x",
            "c, _ = self.crossattention(self.ln_cross_attn(x), key_value_states=encoder_hidden_states,",
            "c, _ = self.crossattention(x, key_value_states=encoder_hidden_states,",
            caught_by="test_decoder_block_is_the_pre_ln_formula_with_distinct_layer_norms"),
    Mistake("decoder_block", "cross-attention mask dropped",
            "                                       mask=encoder_mask)",
            "                                       mask=None)",
            caught_by="test_decoder_cross_attention_reads_the_encoder_and_respects_its_mask"),

    Mistake("mlm_masking", "80/10/10 wrong: random branch 0.8 <= u < 1.0 (nothing kept)",
            "to_random = selected & (u >= 0.8) & (u < 0.9)", "to_random = selected & (u >= 0.8)",
            caught_by="test_mlm_split_is_80_10_10_within_binomial_noise"),
    Mistake("mlm_masking", "80/10/10 wrong: every selected token masked",
            "to_mask = selected & (u < 0.8)", "to_mask = selected",
            caught_by="test_mlm_split_is_80_10_10_within_binomial_noise"),
    Mistake("mlm_masking", "labels kept at unselected positions (no -100)",
            "labels[~selected] = -100", "labels[~selected] = labels[~selected]",
            caught_by="test_mlm_labels_are_the_original_ids_exactly_at_selected_positions"),
    Mistake("mlm_masking", "special tokens selectable",
            "probs.masked_fill_(special_tokens_mask.bool(), 0.0)", "probs = probs",
            caught_by="test_mlm_labels_are_the_original_ids_exactly_at_selected_positions"),
    Mistake("mlm_masking", "random tokens from the whole vocabulary despite random_token_ids",
            "inputs[to_random] = random_token_ids.to(inputs.device)[pick][to_random]",
            "inputs[to_random] = torch.randint(vocab_size, inputs.shape, generator=generator)[to_random]",
            caught_by="test_mlm_labels_are_the_original_ids_exactly_at_selected_positions"),
    Mistake("mlm_masking", "random branch writes [MASK] (90/0/10)",
            "inputs[to_random] = random_token_ids.to(inputs.device)[pick][to_random]",
            "inputs[to_random] = mask_token_id",
            caught_by="test_mlm_split_is_80_10_10_within_binomial_noise"),

    Mistake("nsp_pairs", "NSP labels swapped (IsNext = 1)",
            "\"next_sentence_label\": 0 if is_next else 1,", "\"next_sentence_label\": 1 if is_next else 0,",
            caught_by="test_nsp_pairs_fit_block_size_and_b_follows_a_or_comes_from_another_document"),
    Mistake("nsp_pairs", "NotNext B may come from the same document",
            "return self.documents[other + (other >= doc_index)]",
            "return self.documents[self.rng.randrange(len(self.documents))]",
            caught_by="test_nsp_pairs_fit_block_size_and_b_follows_a_or_comes_from_another_document"),
    Mistake("nsp_pairs", "truncation leaves one token too many",
            "while len(tokens_a) + len(tokens_b) > self.max_num_tokens:",
            "while len(tokens_a) + len(tokens_b) > self.max_num_tokens + 1:",
            caught_by="test_nsp_pairs_fit_block_size_and_b_follows_a_or_comes_from_another_document"),
    Mistake("nsp_pairs", "truncation trims one token too many",
            "while len(tokens_a) + len(tokens_b) > self.max_num_tokens:",
            "while len(tokens_a) + len(tokens_b) >= self.max_num_tokens:",
            caught_by="test_nsp_pairs_fit_block_size_and_b_follows_a_or_comes_from_another_document"),
    Mistake("nsp_pairs", "unused sentences not put back after a NotNext",
            "i -= len(chunk) - a_end  # the sentences not used as A start the next chunk", "pass",
            caught_by="test_nsp_pairs_use_every_sentence_of_a_document_once_in_order"),
    Mistake("nsp_pairs", "truncation trims the shorter side",
            "longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b",
            "longer = tokens_b if len(tokens_a) > len(tokens_b) else tokens_a",
            caught_by="test_nsp_pairs_fit_block_size_and_b_follows_a_or_comes_from_another_document"),

    Mistake("embeddings", "position embeddings left out",
            "+ self.position_embeddings(position_ids)  # (1 or B, T, d)", "+ 0",
            caught_by="test_outputs_and_loss_match_transformers"),
    Mistake("embeddings", "segment embeddings left out",
            "+ self.token_type_embeddings(token_type_ids))  # (B, T, d)", ")",
            caught_by="test_outputs_and_loss_match_transformers"),
    Mistake("embeddings", "LayerNorm after dropout",
            "return self.dropout(self.LayerNorm(embeddings))", "return self.LayerNorm(self.dropout(embeddings))",
            caught_by="test_embedding_hidden_states_in_training_are_dropout_applied_after_the_layer_norm"),
    Mistake("embeddings", "no LayerNorm",
            "return self.dropout(self.LayerNorm(embeddings))", "return self.dropout(embeddings)",
            caught_by="test_outputs_and_loss_match_transformers"),
    Mistake("embeddings", "positions start at 1",
            "position_ids = torch.arange(T, device=input_ids.device)[None, :]  # (1, T)",
            "position_ids = torch.arange(1, T + 1, device=input_ids.device)[None, :]",
            caught_by="test_outputs_and_loss_match_transformers"),

    # ---------------------------------------------------------------- Gold
    Mistake("sampling", "temperature multiplies instead of divides",
            "return logits if temperature == 1.0 else logits / temperature",
            "return logits if temperature == 1.0 else logits * temperature",
            caught_by="test_next_token_sampling_frequencies_follow_the_renormalised_filtered_softmax"),
    Mistake("sampling", "next_token skips top-p",
            "if top_p is not None and top_p < 1.0:", "if False:",
            caught_by="test_next_token_sampling_frequencies_follow_the_renormalised_filtered_softmax"),
    Mistake("sampling", "next_token skips top-k",
            "if top_k is not None:\n        logits = top_k_filter(logits, top_k)",
            "if False:\n        logits = top_k_filter(logits, top_k)",
            caught_by="test_sampling_with_top_k_1_is_greedy"),
    Mistake("sampling", "top-k keeps k + 1 tokens",
            "kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)",
            "kth_largest = torch.topk(logits, min(k + 1, logits.size(-1)), dim=-1).values[..., -1:]",
            caught_by="test_sampling_with_top_k_1_is_greedy"),
    Mistake("sampling", "top-p drops the token that reaches p (cumsum without the shift)",
            "mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # sum_{i<j} p_(i)",
            "mass_before = sorted_probs.cumsum(dim=-1)",
            caught_by="test_top_p_keeps_the_smallest_set_reaching_mass_p_and_samples_only_from_it"),
    Mistake("sampling", "top-p mask left in sorted order",
            "drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order",
            "drop = drop_sorted",
            caught_by="test_top_p_keeps_the_smallest_set_reaching_mass_p_and_samples_only_from_it"),
    Mistake("sampling", "greedy takes the least likely token",
            "return logits.argmax(dim=-1)", "return logits.argmin(dim=-1)",
            caught_by="test_sampling_with_top_k_1_is_greedy"),

    # ---------------------------------------------------------------- tokens (BPE)
    Mistake("bpe_merge", "pair counts ignore the word frequencies",
            "counts[pair] += freq", "counts[pair] += 1",
            caught_by="test_incremental_training_equals_rescanning_bpe_merge_step_by_step"),
    Mistake("bpe_merge", "ties broken by the smallest bytes",
            "best = max(counts, key=lambda p: (counts[p], token_bytes[p[0]], token_bytes[p[1]]))",
            "best = min(counts, key=lambda p: (-counts[p], token_bytes[p[0]], token_bytes[p[1]]))",
            caught_by="test_incremental_training_equals_rescanning_bpe_merge_step_by_step"),
    Mistake("bpe_merge", "a pair counted once per word, not once per position",
            "for pair in zip(word, word[1:]):", "for pair in set(zip(word, word[1:])):"),
    Mistake("bpe_merge", "the least frequent pair is merged",
            "best = max(counts, key=lambda p: (counts[p], token_bytes[p[0]], token_bytes[p[1]]))",
            "best = min(counts, key=lambda p: (counts[p], token_bytes[p[0]], token_bytes[p[1]]))",
            caught_by="test_incremental_training_equals_rescanning_bpe_merge_step_by_step"),

    Mistake("bpe_encode", "merges the highest-ranked (latest) pair first",
            "rank, merged_id = min(found)",
            "rank, merged_id = max((f for f in found if f[1] >= 0), default=_NO_RANK)",
            caught_by="test_bpe_encode_merges_by_rank_not_by_position"),
    Mistake("bpe_encode", "merges the leftmost known pair instead of the lowest rank",
            "rank, merged_id = min(found)",
            "rank, merged_id = next((f for f in found if f[1] >= 0), _NO_RANK)",
            caught_by="test_bpe_encode_merges_by_rank_not_by_position"),
    Mistake("bpe_encode", "stops after one merge",
            "ids = merge_pair(ids, pairs[found.index((rank, merged_id))], merged_id)",
            "return merge_pair(ids, pairs[found.index((rank, merged_id))], merged_id)",
            caught_by="test_bpe_encode_merges_by_rank_again_and_again_until_no_pair_is_known"),

    # ---------------------------------------------------------------- Platinum (Llama)
    Mistake("rms_norm", "LayerNorm's centring kept (x - mean) / rms",
            "normalized = x32 * torch.rsqrt(mean_square + self.eps)  # (..., d) unit root mean square",
            "normalized = (x32 - x32.mean(dim=-1, keepdim=True)) * torch.rsqrt(mean_square + self.eps)",
            caught_by="test_rms_norm_output_has_unit_root_mean_square_before_its_weight"),
    Mistake("rms_norm", "eps added after the square root",
            "normalized = x32 * torch.rsqrt(mean_square + self.eps)  # (..., d) unit root mean square",
            "normalized = x32 / (mean_square.sqrt() + self.eps)",
            caught_by="test_rms_norm_eps_sits_inside_the_square_root"),
    Mistake("rms_norm", "mean of squares over the batch axis",
            "mean_square = x32.pow(2).mean(dim=-1, keepdim=True)  # (..., 1) mean_i x_i^2",
            "mean_square = x32.pow(2).mean(dim=0, keepdim=True)",
            caught_by="test_rms_norm_output_has_unit_root_mean_square_before_its_weight"),
    Mistake("rms_norm", "weight ignored",
            "return self.weight * normalized.to(x.dtype)  # (..., d)", "return normalized.to(x.dtype)",
            caught_by="test_rms_norm_output_has_unit_root_mean_square_before_its_weight"),

    Mistake("swiglu", "gate and up projections swapped",
            "gate = self.act(self.gate_proj(x))  # (B, T, I) silu(x W_1)",
            "gate = self.act(self.up_proj(x))",
            caught_by="test_swiglu_is_down_of_silu_gate_times_up"),
    Mistake("swiglu", "no gate (silu(x W_1) W_2)",
            "return self.down_proj(gate * self.up_proj(x))  # (B, T, d)", "return self.down_proj(gate)",
            caught_by="test_swiglu_is_down_of_silu_gate_times_up"),
    Mistake("swiglu", "activation on the product instead of the gate",
            "return self.down_proj(gate * self.up_proj(x))  # (B, T, d)",
            "return self.down_proj(self.act(self.gate_proj(x) * self.up_proj(x)))",
            caught_by="test_swiglu_is_down_of_silu_gate_times_up"),

    Mistake("rope", "rotation by -theta (sin subtracted)",
            "return x * cos + rotate_half(x) * sin", "return x * cos - rotate_half(x) * sin",
            caught_by="test_rope_at_position_zero_is_the_identity_and_rotates_pairs_i_and_i_plus_half"),
    Mistake("rope", "no rotate_half (x * cos + x * sin)",
            "return x * cos + rotate_half(x) * sin", "return x * cos + x * sin",
            caught_by="test_rope_keeps_the_norm_of_every_vector"),
    Mistake("rope", "cos and sin swapped",
            "return x * cos + rotate_half(x) * sin", "return x * sin + rotate_half(x) * cos",
            caught_by="test_rope_at_position_zero_is_the_identity_and_rotates_pairs_i_and_i_plus_half"),

    # ---------------------------------------------------------------- fine-tuning
    Mistake("lora_linear", "scaling alpha / r left out",
            "return y + self.scaling * self.lora_B(h)  # (..., out)", "return y + self.lora_B(h)",
            caught_by="test_layer_computes_x_WT_plus_b_plus_scaled_dropout_x_AT_BT"),
    Mistake("lora_linear", "delta W transposed ((B A)^T)",
            "return self.scaling * (self.lora_B.weight @ self.lora_A.weight)",
            "return self.scaling * (self.lora_A.weight.T @ self.lora_B.weight.T)",
            caught_by="test_merged_model_equals_unmerged_and_unmerge_restores_W"),
    Mistake("lora_linear", "merged layer adds the adapter a second time",
            "return y  # W already holds W + (alpha / r) B A",
            "return y + self.scaling * self.lora_B(self.lora_A(x))",
            caught_by="test_merged_model_equals_unmerged_and_unmerge_restores_W"),
    Mistake("lora_linear", "dropout on the output of the adapter instead of its input",
            "h = self.lora_A(dropout(x, self.lora_dropout, self.training))  # (..., r)",
            "h = dropout(self.lora_A(x), self.lora_dropout, self.training)",
            caught_by="test_layer_computes_x_WT_plus_b_plus_scaled_dropout_x_AT_BT"),

    Mistake("assistant_labels", "the closing <|end|> not learnt",
            "labels.append(token)  # an assistant token (or the <|end|> closing the turn): learn it",
            "labels.append(token if token != end_id else IGNORE_INDEX)",
            caught_by="test_labels_are_the_assistant_tokens_and_their_end_only"),
    Mistake("assistant_labels", "the <|assistant|> marker learnt as well",
            "labels.append(IGNORE_INDEX)  # prompt: system/user turns and every role marker",
            "labels.append(token if token == assistant_id else IGNORE_INDEX)",
            caught_by="test_labels_are_the_assistant_tokens_and_their_end_only"),
    Mistake("assistant_labels", "every token after the first assistant marker learnt",
            "inside = token != end_id", "inside = True",
            caught_by="test_labels_are_the_assistant_tokens_and_their_end_only"),
    Mistake("assistant_labels", "prompt tokens learnt too (no -100)",
            "labels.append(IGNORE_INDEX)  # prompt: system/user turns and every role marker",
            "labels.append(token)",
            caught_by="test_labels_are_the_assistant_tokens_and_their_end_only"),

    # ---------------------------------------------------------------- T5
    Mistake("relative_position_bucket", "direction inverted (keys before the query in the upper half)",
            "bucket = bucket + (relative_position > 0).long() * num_buckets  # keys after the query",
            "bucket = bucket + (relative_position < 0).long() * num_buckets",
            caught_by="test_relative_position_bucket_equals_transformers"),
    Mistake("relative_position_bucket", "causal distance of the wrong sign",
            "n = (-relative_position).clamp_min(0)", "n = relative_position.clamp_min(0)",
            caught_by="test_relative_position_bucket_equals_transformers"),
    Mistake("relative_position_bucket", "log-spaced buckets span log D instead of log(D / N_e)",
            "log_ratio = torch.log(n.float().clamp_min(1) / max_exact) / math.log(max_distance / max_exact)",
            "log_ratio = torch.log(n.float().clamp_min(1) / max_exact) / math.log(max_distance)"),
    Mistake("relative_position_bucket", "last bucket overflows (no clamp to N - 1)",
            "large = large.clamp_max(num_buckets - 1)", "large = large",
            caught_by="test_relative_position_bucket_equals_transformers"),

    Mistake("span_corruption", "every noise token gets its own sentinel",
            "starts_span = noise and (i == 0 or not noise_mask[i - 1])", "starts_span = noise",
            caught_by="test_the_papers_example"),
    Mistake("span_corruption", "sentinels counted upwards",
            "sentinel -= 1", "sentinel += 1",
            caught_by="test_the_papers_example"),
    Mistake("span_corruption", "targets without the sentinels",
            "            targets.append(sentinel)\n", "",
            caught_by="test_inputs_and_targets_reconstruct_the_original"),
    Mistake("span_corruption", "noise span first instead of a kept gap",
            "mask += [False] * keep + [True] * noise", "mask += [True] * noise + [False] * keep",
            caught_by="test_noise_count_and_span_count_follow_t5s_formulas"),

    Mistake("speculative_sampling", "acceptance ratio upside down (q / p instead of p / q)",
            "if r * q[i, token] < p[i, token]:", "if r * p[i, token] < q[i, token]:",
            caught_by="test_accept_draft_gives_every_token_the_targets_distribution"),
    Mistake("speculative_sampling", "a rejected token redrawn from p instead of the residual max(0, p - q)",
            "residual = (p[i] - q[i]).clamp_min(0.0)  # where the target wants more than the draft gave",
            "residual = p[i].clone()",
            caught_by="test_accept_draft_gives_every_token_the_targets_distribution"),
    Mistake("speculative_sampling", "every drafted token kept (no rejection)",
            "if r * q[i, token] < p[i, token]:", "if True:",
            caught_by="test_accept_draft_gives_every_token_the_targets_distribution"),
    Mistake("speculative_sampling", "the bonus token drawn from the last drafted position's p",
            "return len(draft), int(torch.multinomial(p[-1], 1, generator=generator))",
            "return len(draft), int(torch.multinomial(p[len(draft) - 1], 1, generator=generator))",
            caught_by="test_accept_draft_gives_every_token_the_targets_distribution"),

    Mistake("beam_search", "finished scores not normalised by length",
            "new_scores = top_scores / (generated ** self.config.length_penalty)",
            "new_scores = top_scores",
            caught_by="test_beam_search_gives_transformers_tokens"),
    Mistake("beam_search", "only the K best candidates kept (an eos among them starves the beam)",
            "top_scores, top_index = log_p.view(B, K * V).topk(2 * K, dim=-1)  # (B, 2K), best first",
            "top_scores, top_index = log_p.view(B, K * V).topk(K, dim=-1)",
            caught_by="test_beam_search_gives_transformers_tokens"),
    Mistake("beam_search", "running scores not accumulated (each step scored alone)",
            "log_p = log_p.view(B, K, V) + self.running_scores[:, :, None]",
            "log_p = log_p.view(B, K, V) + 0 * self.running_scores[:, :, None]",
            caught_by="test_beam_search_gives_transformers_tokens"),
    Mistake("beam_search", "caches not reordered with their beams",
            "source_rows = (beam.gather(1, keep) + torch.arange(B, device=logits.device)[:, None] * K).view(-1)",
            "source_rows = torch.arange(B * K, device=logits.device)",
            caught_by="test_beam_search_gives_transformers_tokens"),

    Mistake("distillation_loss", "no T^2 (the gradient shrinks as 1 / T^2)",
            "return temperature ** 2 * kl.mean()", "return kl.mean()",
            caught_by="test_t_squared_keeps_the_gradient_size_across_temperatures"),
    Mistake("distillation_loss", "KL(p_s || p_t) instead of KL(p_t || p_s)",
            "kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)",
            "kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=-1)",
            caught_by="test_loss_is_t_squared_times_kl_of_the_softened_distributions"),
    Mistake("distillation_loss", "the teacher's logits not divided by T",
            "log_p_t = log_softmax(teacher_logits.detach() / temperature, dim=-1)",
            "log_p_t = log_softmax(teacher_logits.detach(), dim=-1)",
            caught_by="test_kl_is_zero_when_the_student_is_the_teacher"),
    Mistake("distillation_loss", "gradient flows into the teacher",
            "log_p_t = log_softmax(teacher_logits.detach() / temperature, dim=-1)",
            "log_p_t = log_softmax(teacher_logits / temperature, dim=-1)",
            caught_by="test_teacher_gets_no_gradient_and_mask_selects_rows"),
    Mistake("distillation_loss", "mask ignored (padding rows count)",
            "        kl = kl[mask]", "        kl = kl",
            caught_by="test_teacher_gets_no_gradient_and_mask_selects_rows"),

    Mistake("quantize_absmax", "scale max|x| / 128 (the grid of -128..127)",
            "absmax / QMAX", "absmax / 128",
            caught_by="test_rounding_error_is_at_most_half_a_step"),
    Mistake("quantize_absmax", "truncation instead of rounding",
            "q = torch.round(x / scale)", "q = torch.trunc(x / scale)",
            caught_by="test_rounding_error_is_at_most_half_a_step"),
    Mistake("quantize_absmax", "one scale for the whole tensor (per-tensor, not per channel)",
            "absmax = x.abs().amax(dim=-1, keepdim=True)  # (..., 1)",
            "absmax = x.abs().amax().expand(*x.shape[:-1], 1)",
            caught_by="test_zero_rows_and_one_outlier_per_row"),
    Mistake("quantize_absmax", "an all-zero row divides by zero",
            "scale = torch.where(absmax > 0, absmax / QMAX, torch.ones_like(absmax))  # (..., 1)",
            "scale = absmax / QMAX",
            caught_by="test_zero_rows_and_one_outlier_per_row"),

    Mistake("kv_cache", "overwrites from position 0 each step",
            "start, end = self.length, self.length + key.size(2)",
            "start, end = 0, key.size(2)",
            caught_by="test_incremental_attention_with_kv_cache_equals_full_causal_attention"),
    Mistake("kv_cache", "length never advances",
            "self.length = end", "self.length = self.length",
            caught_by="test_incremental_attention_with_kv_cache_equals_full_causal_attention"),
    Mistake("kv_cache", "returns only the new keys",
            "return self.key[:, :, :end], self.value[:, :, :end]",
            "return self.key[:, :, start:end], self.value[:, :, start:end]",
            caught_by="test_incremental_attention_with_kv_cache_equals_full_causal_attention"),
    Mistake("kv_cache", "values written into the key buffer",
            "self.value[:, :, start:end] = value", "self.value[:, :, start:end] = key",
            caught_by="test_incremental_attention_with_kv_cache_equals_full_causal_attention"),

    Mistake("online_softmax", "running maximum forgets the earlier blocks",
            "m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))",
            "m_new = scores.amax(dim=-1, keepdim=True)",
            caught_by="test_online_softmax_folded_block_by_block_equals_softmax_times_values"),
    Mistake("online_softmax", "normaliser not rescaled to the new maximum",
            "l_new = alpha * l + p.sum(dim=-1, keepdim=True)", "l_new = l + p.sum(dim=-1, keepdim=True)",
            caught_by="test_online_softmax_rescales_the_old_sums"),
    Mistake("online_softmax", "output sum not rescaled to the new maximum",
            "acc_new = alpha * acc + p @ values", "acc_new = acc + p @ values",
            caught_by="test_online_softmax_rescales_the_old_sums"),
    Mistake("online_softmax", "rescaling factor inverted, exp(m' - m)",
            "alpha = torch.exp(m - m_new)", "alpha = torch.exp(m_new - m)",
            caught_by="test_online_softmax_folded_block_by_block_equals_softmax_times_values"),
    Mistake("online_softmax", "dropout applied to the normaliser too",
            "l_new = alpha * l + p.sum(dim=-1, keepdim=True)",
            "l_new = alpha * l + (p if keep is None else p * keep).sum(dim=-1, keepdim=True)",
            caught_by="test_online_softmax_applies_dropout"),
    Mistake("induction_score", "the earlier copy of the same token (a duplicate-token head), not the one after it",
            "keys = queries - period + 1  # the token after the first occurrence of x_t",
            "keys = queries - period",
            caught_by="test_induction_score_is_one"),
    Mistake("induction_score", "queries from the start of the sequence, not the repeat",
            "queries = torch.arange(start + period, start + 2 * period)  # t in the repeat",
            "queries = torch.arange(start, start + 2 * period)",
            caught_by="test_induction_score_is_one"),
    Mistake("induction_score", "the offset `start` ignored",
            "queries = torch.arange(start + period, start + 2 * period)  # t in the repeat",
            "queries = torch.arange(period, 2 * period)",
            caught_by="test_induction_score_is_one"),
    Mistake("induction_score", "averaged over the heads instead of the batch",
            "return A[..., queries, keys].mean(dim=(1, -1))  # (L, H)",
            "return A[..., queries, keys].mean(dim=(2, -1))",
            caught_by="test_induction_score_is_one"),
    # ---------------------------------------------------------------- post-training (issue 31)
    Mistake("dpo_loss", "chosen and rejected swapped in the margin",
            "margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)  # (B,)",
            "margin = (policy_rejected - reference_rejected) - (policy_chosen - reference_chosen)  # (B,)",
            caught_by="test_dpo_loss_is_minus_log_sigmoid_of_beta_times_the_margin"),
    Mistake("dpo_loss", "reference log-probabilities added instead of subtracted",
            "margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)  # (B,)",
            "margin = (policy_chosen + reference_chosen) - (policy_rejected + reference_rejected)  # (B,)",
            caught_by="test_dpo_loss_is_minus_log_sigmoid_of_beta_times_the_margin"),
    Mistake("dpo_loss", "beta outside the log-sigmoid",
            "return -F.logsigmoid(beta * margin).mean()", "return -beta * F.logsigmoid(margin).mean()",
            caught_by="test_dpo_loss_is_minus_log_sigmoid_of_beta_times_the_margin"),
    Mistake("dpo_loss", "summed over the pairs instead of averaged",
            "return -F.logsigmoid(beta * margin).mean()", "return -F.logsigmoid(beta * margin).sum()",
            caught_by="test_dpo_loss_is_the_mean_over_the_pairs"),

    Mistake("grpo_advantages", "baseline over the whole batch, not the group",
            "mean = rewards.mean(dim=1, keepdim=True)  # (P, 1)", "mean = rewards.mean()",
            caught_by="test_advantages_have_mean_zero_in_every_group"),
    Mistake("grpo_advantages", "no baseline (rewards only scaled)",
            "centred = rewards - mean  # (P, G): every row sums to 0", "centred = rewards",
            caught_by="test_advantages_have_mean_zero_in_every_group"),
    Mistake("grpo_advantages", "population std (divisor G) instead of the sample std",
            "std = rewards.std(dim=1, keepdim=True)  # (P, 1), divisor G - 1",
            "std = rewards.std(dim=1, keepdim=True, unbiased=False)",
            caught_by="test_advantages_are_the_group_z_scores_not_the_batch_ones"),
    Mistake("grpo_advantages", "no eps: a group with one reward divides 0 by 0",
            "return centred / (std + eps)", "return centred / std",
            caught_by="test_advantages_are_the_group_z_scores_not_the_batch_ones"),

    Mistake("pass_at_k", "with replacement: 1 - (1 - c / n)^k",
            "return 1.0 - fail", "return 1.0 - (1.0 - c / n) ** k",
            caught_by="test_pass_at_k_is_the_fraction_of_k_subsets_holding_a_right_answer"),
    Mistake("pass_at_k", "product starts one factor early",
            "for i in range(n - c + 1, n + 1):", "for i in range(n - c, n + 1):",
            caught_by="test_pass_at_k_is_the_fraction_of_k_subsets_holding_a_right_answer"),
    Mistake("pass_at_k", "pass@1 for every k (c / n)",
            "return 1.0 - fail", "return c / n",
            caught_by="test_pass_at_k_is_the_fraction_of_k_subsets_holding_a_right_answer"),

)


def mistakes_by_exercise(mistakes: Iterable[Mistake] = MISTAKES) -> dict[str, list[Mistake]]:
    out: dict[str, list[Mistake]] = {}
    for m in mistakes:
        out.setdefault(m.exercise, []).append(m)
    return out


# --------------------------------------------------------------------------------------------
# Applying a patch


class PatchError(ex.ExerciseError):
    """A patch whose `old` text is not found exactly once where it must be."""


def apply_patch(text: str, old: str, new: str, where: str,
                span: Optional[tuple[int, int]] = None) -> str:
    """`text` with the one occurrence of `old` (inside lines span[0]..span[1], 1-based, if given)
    replaced by `new`; PatchError naming `where` when it occurs 0 or 2+ times there."""
    lines = text.splitlines(keepends=True)
    lo, hi = (0, len(lines)) if span is None else (span[0] - 1, span[1])
    head, part, tail = "".join(lines[:lo]), "".join(lines[lo:hi]), "".join(lines[hi:])
    count = part.count(old)
    if count != 1:
        inside = "" if span is None else f" between lines {span[0]} and {span[1]}"
        raise PatchError(f"{where}: the text to replace occurs {count} times{inside} (must be once); "
                         f"update the patch to the current code: {old.splitlines()[0]!r}")
    out = head + part.replace(old, new) + tail
    try:
        ast.parse(out)
    except SyntaxError as e:
        raise PatchError(f"{where}: the patched file is not valid Python (line {e.lineno}: {e.msg})") from None
    return out


def region_span(text: str, name: str) -> Optional[tuple[int, int]]:
    """(line of `# BEGIN EXERCISE name`, line of `# END EXERCISE name`), 1-based, or None.
    (Only this region's markers are read; tutorials/exercises.py checks all of them.)"""
    begin = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        match = ex.MARKER.match(line)
        if match and match.group(2).strip() == name:
            if match.group(1) == "BEGIN":
                begin = lineno
            elif begin is not None:
                return begin, lineno
    return None


def apply_mistake(root: Path, mistake: Mistake,
                  registry: Mapping[str, ex.Exercise] = ex.REGISTRY) -> tuple[str, str]:
    """(the exercise's source path relative to root, its text with the mistake applied)."""
    exercise = registry[mistake.exercise]
    text = (Path(root) / exercise.source).read_text(encoding="utf-8")
    where = f"{exercise.source}: mistake {mistake.exercise}/{mistake.name!r}"
    span = region_span(text, mistake.exercise)
    if span is None:
        raise PatchError(f"{where}: no '# BEGIN EXERCISE {mistake.exercise}' ... '# END EXERCISE "
                         f"{mistake.exercise}' region in the file")
    return exercise.source, apply_patch(text, mistake.old, mistake.new, where, span)


# --------------------------------------------------------------------------------------------
# Running tests against patched copies, one forked child per patch


@dataclass
class Verdict:
    label: str
    caught_by: Optional[str]  # the first failing test's node id, None = the patch survived
    message: str
    seconds: float
    passed: int = 0  # tests that passed before the first failure

    @property
    def caught(self) -> bool:
        return self.caught_by is not None


PROJECT_TOPS = ("common", "minibert", "minigpt", "minit5", "demo", "tutorials", "bench", "tests",
                "conftest")


def _forget_project_modules(*folders: Path) -> None:
    """Drop from sys.modules the project's packages and every module loaded from `folders` (the
    course, the copy): the child must import the patched copy, not what the parent had."""
    roots = [str(Path(f).resolve()) + os.sep for f in folders]
    environment = (str(Path(sys.prefix).resolve()) + os.sep, str(Path(sys.base_prefix).resolve()) + os.sep)
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        file = str(getattr(module, "__file__", None) or "")
        ours = (any(file.startswith(r) for r in roots) and not file.startswith(environment)
                and "site-packages" not in file)  # a .venv inside the course is not the course
        if name != "__main__" and (top in PROJECT_TOPS or top.startswith("test_") or ours):
            del sys.modules[name]


class _FirstFailure:
    """pytest plugin: remembers the first failing test (or collection error) and counts passes."""

    def __init__(self):
        self.nodeid: Optional[str] = None
        self.message = ""
        self.passed = 0

    def _failed(self, report) -> None:
        if self.nodeid is None:
            self.nodeid = report.nodeid or "collection"
            text = getattr(report, "longreprtext", "") or ""
            lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
            lines = lines or text.strip().splitlines()[-1:] or [""]
            self.message = lines[0][:300]

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self._failed(report)
        elif report.passed and report.when == "call":
            self.passed += 1

    def pytest_collectreport(self, report):
        if report.failed:
            self._failed(report)


def _child(root: Path, pytest_args: Sequence[str], result_path: str) -> None:
    import pytest
    _forget_project_modules(ROOT, root)
    os.chdir(root)
    sys.path[:] = [str(root)] + [p for p in sys.path if p not in ("", str(ROOT))]
    recorder = _FirstFailure()
    # --assert=plain: no assertion rewriting (it recompiles every test file, about 1 s per child); a
    # failing assert still fails and still shows its message.
    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--no-header", "--tb=short",
                        "--assert=plain", *pytest_args], plugins=[recorder])
    Path(result_path).write_text(json.dumps(
        {"nodeid": recorder.nodeid, "message": recorder.message, "passed": recorder.passed,
         "code": int(code)}), encoding="utf-8")


@dataclass
class _Running:
    pid: int
    label: str
    root: Path
    rel: str
    original: str
    result_path: str
    start: float


def _fork(root: Path, rel: str, patched: str, args: Sequence[str], label: str,
          quiet: bool) -> _Running:
    path = Path(root) / rel
    original = path.read_text(encoding="utf-8")
    path.write_text(patched, encoding="utf-8")
    fd, result_path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            if quiet:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
            _child(Path(root), args, result_path)
        finally:
            os._exit(0)
    return _Running(pid, label, Path(root), rel, original, result_path, start)


def _collect(job: _Running, status: Optional[int]) -> Verdict:
    (job.root / job.rel).write_text(job.original, encoding="utf-8")  # restore the file
    seconds = time.perf_counter() - job.start
    try:
        data = json.loads(Path(job.result_path).read_text(encoding="utf-8") or "{}")
    except ValueError:
        data = {}
    finally:
        os.unlink(job.result_path)
    if status is None:  # never counted as a catch: a slow machine must not hide a survivor
        return Verdict(job.label, None, f"the tests did not finish in {seconds:.0f} s (killed)", seconds)
    if not data:
        return Verdict(job.label, "crash", f"the test process died (status {status})", seconds)
    nodeid = data["nodeid"]
    if nodeid is None and data["code"] == 5:  # pytest's "no tests collected"
        return Verdict(job.label, None, "no test was selected", seconds)
    if nodeid is None and data["code"] != 0:  # usage or internal error: no test ran, nothing caught
        return Verdict(job.label, None, f"pytest could not run the tests (exit {data['code']})", seconds)
    return Verdict(job.label, nodeid, data["message"], seconds, data["passed"])


def preload() -> None:
    """Import the heavy libraries (and pytest's plugins) once in the parent, so that every forked
    child starts with them."""
    import importlib
    import importlib.metadata

    import hypothesis  # noqa: F401
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401
    try:  # the parity tests' oracle: about 2.5 s of imports that every child running them would repeat
        importlib.import_module("transformers.modeling_utils")
    except Exception:
        pass
    for entry in importlib.metadata.entry_points(group="pytest11"):
        try:
            importlib.import_module(entry.value.split(":")[0])
        except Exception:  # a broken plugin fails the same way in the child; not our business
            pass
    sys.dont_write_bytecode = True  # patched and restored files must never be read from a stale .pyc


def grader_args(exercise: ex.Exercise, narrow: str = "") -> list[str]:
    """The pytest arguments that select the exercise's mapped tests, as the grader does (and,
    with `narrow`, only those of them whose name holds that word)."""
    k = exercise.k_expression()
    if narrow:
        k = f"({k}) and {narrow}" if k else narrow
    return [*exercise.tests, *(["-k", k] if k else []), "-p", "tutorials.grading_plugin"]


def run_patches(roots: Sequence[Path], jobs: Sequence[tuple[str, str, str, list[str]]],
                timeout: float = 300.0, echo=None, quiet: bool = True) -> list[Verdict]:
    """jobs: (label, relative path, patched text, pytest args). Each patch is written into one of
    the identical course copies `roots`, its tests run there in a forked child (as many at a time
    as there are roots), and the file is restored. Verdicts come back in the order of `jobs`."""
    preload()
    todo = list(enumerate(jobs))
    free = list(roots)
    running: dict[int, tuple[int, _Running]] = {}
    verdicts: dict[int, Verdict] = {}
    while todo or running:
        while todo and free:
            index, (label, rel, patched, args) = todo.pop(0)
            job = _fork(free.pop(0), rel, patched, args, label, quiet)
            running[job.pid] = (index, job)
        time.sleep(0.02)
        for pid, (index, job) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done and time.perf_counter() - job.start > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                done, status = pid, None
            if done:
                del running[pid]
                verdicts[index] = _collect(job, status)
                free.append(job.root)
                if echo:
                    echo(verdicts[index])
    return [verdicts[i] for i in range(len(jobs))]


def default_workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1)))


def check_mistakes(roots: Sequence[Path], only: Optional[Iterable[str]] = None,
                   mistakes: Sequence[Mistake] = MISTAKES, echo=None,
                   registry: Mapping[str, ex.Exercise] = ex.REGISTRY) -> list[Verdict]:
    """Apply each mistake (of the chosen exercises) to a course copy, one at a time, and run its
    exercise's mapped tests; `roots` are identical student copies (copy_course), one per worker."""
    chosen = None if only is None else set(only)
    picked = [m for m in mistakes if m.exercise in registry
              and (chosen is None or m.exercise in chosen)]
    patched = [apply_mistake(roots[0], m, registry) for m in picked]

    def jobs(indices, narrow):
        return [(f"{picked[i].exercise}: {picked[i].name}", *patched[i],
                 grader_args(registry[picked[i].exercise], picked[i].caught_by if narrow else ""))
                for i in indices]

    # First the test each mistake names (when it names one), then the whole selection for the rest.
    first = [i for i, m in enumerate(picked) if m.caught_by]
    verdicts: dict[int, Verdict] = dict(zip(first, run_patches(
        roots, jobs(first, True), echo=lambda v: v.caught and echo and echo(v))))
    rest = [i for i in range(len(picked)) if i not in verdicts or not verdicts[i].caught]
    verdicts.update(zip(rest, run_patches(roots, jobs(rest, False), echo=echo)))
    return [verdicts[i] for i in range(len(picked))]


def format_verdict(v: Verdict) -> str:
    if not v.caught:
        return f"SURVIVED  {v.label}  ({v.message or 'every selected test passed'}; {v.seconds:.1f} s)"
    return f"caught    {v.label}\n          by {v.caught_by}  ({v.seconds:.1f} s)"


def copy_course(out: Path, root: Path = ROOT) -> Path:
    """The course's files as a student copy holds them (`make exercises` with nothing stubbed)."""
    import shutil
    out = Path(out)
    for rel in ex._course_files(Path(root)):
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(Path(root) / rel, dest)
        except FileNotFoundError:  # removed since git listed it (others edit the tree meanwhile)
            pass
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tutorials.mistakes", allow_abbrev=False,
        description="Apply each named mistake to a student copy and show which mapped test fails.")
    parser.add_argument("--only", action="append", metavar="NAME", choices=list(ex.REGISTRY),
                        help="only this exercise's mistakes (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="test processes at a time (default: the cores, at most 4: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        # the course as a student receives it, nothing stubbed; one copy per worker
        roots = [copy_course(Path(tmp) / f"student{i}") for i in range(args.workers)]
        start = time.perf_counter()
        verdicts = check_mistakes(roots, args.only,
                                  echo=lambda v: print(format_verdict(v), flush=True))
    survivors = [v for v in verdicts if not v.caught]
    print(f"{len(verdicts) - len(survivors)}/{len(verdicts)} mistakes caught by their exercise's "
          f"mapped tests in {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([v.__dict__ for v in verdicts], indent=1), encoding="utf-8")
    return 1 if survivors else 0


if __name__ == "__main__":
    ex.run_cli(main)
