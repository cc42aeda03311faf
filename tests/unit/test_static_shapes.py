"""platforms/backend/static_shapes.py on the CPU: the learner's length buckets on XLA and the padding into them."""

from __future__ import annotations

import torch

from platforms.backend.static_shapes import length_bucket, pad_to_lengths
from remix.batching import collate
from remix.interfaces import Group


def test_lengths_go_to_powers_of_two_of_at_least_the_minimum():
    assert [length_bucket(n, 32) for n in (0, 1, 31, 32, 33, 64, 65, 1000, 4096, 4097)] == \
        [32, 32, 32, 32, 64, 64, 128, 1024, 4096, 8192]
    # every length up to 4,096: 8 buckets (multiples of 32 were 128), none more than twice the length above 32
    buckets = {length_bucket(n, 32) for n in range(1, 4097)}
    assert len(buckets) == 8
    assert all(length_bucket(n, 32) < 2 * n for n in range(33, 4097))


def test_padding_into_a_bucket_keeps_every_token_and_masks_the_rest():
    groups = [Group(prompt_ids=[5, 6, 7], responses=[[1, 2], [3, 4, 5, 9]], rewards=[0.0, 1.0], version=1)]
    batch = collate(groups, pad_id=0)
    batch.fields["advantages"] = torch.ones(batch.response_mask.shape)
    P, T = batch.prompt_len, batch.response_mask.shape[1]
    padded = pad_to_lengths(batch, 32, 64)
    assert padded.prompt_len == 32 and padded.response_mask.shape == (2, 64) and padded.input_ids.shape == (2, 96)
    # prompts are left-padded, responses right-padded: the real tokens keep their order next to each other
    assert torch.equal(padded.input_ids[:, 32 - P:32 + T], batch.input_ids)
    assert torch.equal(padded.attention_mask[:, 32 - P:32 + T], batch.attention_mask)
    assert padded.attention_mask.sum() == batch.attention_mask.sum()
    assert padded.response_mask.sum() == batch.response_mask.sum()
    assert padded.fields["advantages"].sum() == batch.fields["advantages"].sum()
    assert pad_to_lengths(batch, P, T) is batch
