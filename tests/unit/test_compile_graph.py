"""torch.compile traces a whole pretraining forward (masking given) as one graph, without breaks."""

import pytest
import torch
import torch._dynamo as dynamo

from fusmae_fast import build_model
from fusmae_fast.masking import random_masking


@pytest.mark.parametrize(("variant", "masking"), [("xae", "consistent"), ("xad", "independent")])
def test_forward_is_one_graph(variant, masking):
    dynamo.reset()
    model = build_model("tiny", variant=variant, masking=masking)
    s1, s2 = torch.randn(2, 2, 120, 120), torch.randn(2, 12, 120, 120)
    mk = random_masking(2, model.config.num_patches, 0.75, masking, seeds=torch.tensor([1, 2]))
    explained = dynamo.explain(model)(s1, s2, masking=mk, loss_only=True)
    reasons = [str(r.reason)[:300] for r in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1
