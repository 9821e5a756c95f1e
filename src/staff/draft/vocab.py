"""A draft with the task's vocabulary: the embedding and LM head keep only the tokens the task
uses, so the head shrinks with the task (issue 19).

Why: a draft drops decoder layers, but the LM head (vocabulary x hidden) stays whole; with
SmolLM2's 49k-token vocabulary it is ~40% of a 12-layer draft's training pass. A task's data
uses a few thousand of those tokens. Keeping only them makes the head (and the embedding)
that much smaller, and the draft stays an ordinary model folder:

- **Which tokens.** Every id in the task's tokenized samples, the tokenizer's special and added
  tokens, the byte alphabet (so any text still encodes), and, for BPE, every intermediate
  token a kept token is merged from (so the merges that built them still can).
- **The tokenizer.** Its ``tokenizer.json`` is rewritten with the kept tokens renumbered
  0..V'-1 and only the merges among them (BPE), or only the kept pieces (Unigram). BPE applies
  the lowest-ranked applicable merge at each step; every merge the task's text used is kept and
  a removed merge was never the lowest there, so the task's text splits exactly as before, into
  renumbered ids. This is checked on every sample (``check_same_split``); a tokenizer of
  another kind, or a mismatch, is a clear error, not a silent difference.
- **The model.** Embedding rows and LM head rows of the kept ids, in the new order; config's
  vocab size and special token ids follow. The draft's logits over the kept tokens are the
  full model's logits at those ids (tested), so its softmax is renormalised over the task's
  vocabulary: probability that the full model puts on tokens the task never uses is gone.
- **Healing.** The target (teacher) sees the original ids, the draft the new ones; the KL is
  taken over the kept tokens (the teacher's distribution restricted to them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch


class VocabularyError(ValueError):
    """A tokenizer the task vocabulary cannot be cut from; the message says what to set."""


@dataclass
class TaskVocabulary:
    kept: np.ndarray        # original ids kept, ascending; the new id of kept[j] is j
    old_to_new: np.ndarray  # (V,) new id of each original id, -1 for a removed one

    @property
    def size(self) -> int:
        return len(self.kept)

    def map(self, ids) -> np.ndarray:
        new = self.old_to_new[np.asarray(ids, dtype=np.int64)]
        if np.any(new < 0):
            raise VocabularyError(f"token id(s) {sorted(set(np.asarray(ids)[new < 0]))[:5]} are "
                                  "not in the task vocabulary.")
        return new


def _merge_parts(merge) -> tuple[str, str]:
    return tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge)


def task_vocabulary(tokenizer, id_lists) -> tuple[TaskVocabulary, dict]:
    """The kept ids and the rewritten tokenizer.json (as a dict) for the task's token ids."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    size = len(tokenizer)
    used = set()
    for ids in id_lists:
        used.update(int(i) for i in ids)
    special = {int(t["id"]) for t in spec.get("added_tokens", [])}
    special |= {i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id,
                            tokenizer.pad_token_id, tokenizer.unk_token_id) if i is not None}
    if model["type"] == "BPE":
        vocab = model["vocab"]
        token_of = {i: t for t, i in vocab.items()}
        made_of = {}
        for merge in model["merges"]:
            a, b = _merge_parts(merge)
            made_of.setdefault(a + b, (a, b))
        keep = {token_of[i] for i in used | special if i in token_of}
        keep |= {t for t in vocab if len(t) == 1}          # the byte (or character) alphabet
        stack = list(keep)
        while stack:                                         # what kept tokens are merged from
            for part in made_of.get(stack.pop(), ()):
                if part not in keep:
                    keep.add(part)
                    stack.append(part)
        kept_ids = {vocab[t] for t in keep} | special
    elif model["type"] == "Unigram":
        pieces = model["vocab"]
        byte_pieces = {i for i, (p, _) in enumerate(pieces)
                       if p.startswith("<0x") and p.endswith(">") and len(p) == 6}
        unk = {model["unk_id"]} if model.get("unk_id") is not None else set()
        kept_ids = used | special | byte_pieces | unk
    else:
        raise VocabularyError(f"draft.task_vocabulary: the tokenizer's model is "
                              f"{model['type']}, not BPE or Unigram; set "
                              "draft.task_vocabulary: false.")
    kept = np.array(sorted(i for i in kept_ids if 0 <= i < size), dtype=np.int64)
    old_to_new = np.full(size, -1, dtype=np.int64)
    old_to_new[kept] = np.arange(len(kept))
    vocab = TaskVocabulary(kept=kept, old_to_new=old_to_new)
    return vocab, _rewrite(spec, vocab)


def _rewrite(spec: dict, vocab: TaskVocabulary) -> dict:
    spec = json.loads(json.dumps(spec))  # a copy
    new = vocab.old_to_new
    model = spec["model"]
    if model["type"] == "BPE":
        kept_tokens = {t: int(new[i]) for t, i in model["vocab"].items() if new[i] >= 0}
        model["vocab"] = kept_tokens
        merges = []
        for merge in model["merges"]:
            a, b = _merge_parts(merge)
            if a in kept_tokens and b in kept_tokens and a + b in kept_tokens:
                merges.append(merge)
        model["merges"] = merges
    else:  # Unigram: the list position is the id
        model["vocab"] = [model["vocab"][i] for i in vocab.kept]
        if model.get("unk_id") is not None:
            model["unk_id"] = int(new[model["unk_id"]])
    for token in spec.get("added_tokens", []):
        token["id"] = int(new[token["id"]])

    def remap(node):  # special-token ids inside post-processor templates
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ids" and isinstance(value, list):
                    node[key] = [int(new[i]) for i in value]
                elif key == "id" and isinstance(value, int) and "content" not in node:
                    node[key] = int(new[value])
                else:
                    remap(value)
        elif isinstance(node, list):
            for item in node:
                remap(item)

    remap(spec.get("post_processor"))
    return spec


def shrink_tokenizer(tokenizer, spec: dict):
    """A fast tokenizer from the rewritten tokenizer.json, with the original's special tokens,
    padding side and chat template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    names = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "pad_token",
                                                 "unk_token") if getattr(tokenizer, k, None)}
    small = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                    **names)
    small.padding_side = tokenizer.padding_side
    small.chat_template = getattr(tokenizer, "chat_template", None)
    return small


@torch.no_grad()
def shrink_model(model, vocab: TaskVocabulary) -> None:
    """Keep the embedding and LM head rows of the kept ids, in place (ties kept)."""
    kept = torch.as_tensor(vocab.kept, device=model.device)
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == embed.weight.data_ptr()
    new_embed = torch.nn.Embedding(len(kept), embed.weight.shape[1],
                                   padding_idx=None, device=embed.weight.device,
                                   dtype=embed.weight.dtype)
    new_embed.weight.copy_(embed.weight[kept])
    model.set_input_embeddings(new_embed)
    if head is not None:
        new_head = torch.nn.Linear(head.weight.shape[1], len(kept), bias=head.bias is not None,
                                   device=head.weight.device, dtype=head.weight.dtype)
        if tied:
            new_head.weight = new_embed.weight
        else:
            new_head.weight.copy_(head.weight[kept])
        if head.bias is not None:
            new_head.bias.copy_(head.bias[kept])
        model.set_output_embeddings(new_head)
    model.config.vocab_size = len(kept)
    configs = [model.config, getattr(model, "generation_config", None)]
    for cfg in [c for c in configs if c is not None]:
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(cfg, name, None)
            if isinstance(value, int):
                setattr(cfg, name, int(vocab.old_to_new[value]))
            elif isinstance(value, list):
                setattr(cfg, name, [int(vocab.old_to_new[v]) for v in value])


def check_same_split(old_tokens: list, new_tokens: list, vocab: TaskVocabulary) -> None:
    """Every sample must tokenize into the same tokens, renumbered."""
    bad = [t.id for t, u in zip(old_tokens, new_tokens)
           if len(t.input_ids) != len(u.input_ids)
           or not np.array_equal(vocab.old_to_new[np.asarray(t.input_ids)],
                                 np.asarray(u.input_ids))]
    if bad:
        raise VocabularyError(f"draft.task_vocabulary: the reduced tokenizer splits "
                              f"{len(bad)} sample(s) differently (e.g. id {bad[0]!r}); set "
                              "draft.task_vocabulary: false.")


def remap_examples(tokens: list, vocab: TaskVocabulary) -> list:
    """The same tokenized samples with input ids and (response) labels renumbered."""
    import dataclasses

    out = []
    for t in tokens:
        labels = np.asarray(t.labels)
        mapped = np.where(labels >= 0, vocab.old_to_new[np.maximum(labels, 0)], labels)
        out.append(dataclasses.replace(t, input_ids=vocab.map(t.input_ids).tolist(),
                                       labels=mapped.tolist()))
    return out
